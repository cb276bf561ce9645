"""Prompt counting with a model folder's own tokenizer: what the proxy pays per request, and once per folder.

    python bench/prompt_count.py [--model DIR] [--repeats 20]

A Claude-Code-shaped prompt (a long system prompt, a question, 18 tools with JSON schemas: ~79 KB of body) is
counted with the folder's tokenizer and chat template as the proxy counts it (launcher/bridge/local_tokens.py):
the first count (loading transformers and the tokenizer) and the median of the next `--repeats`, against the
estimate from the body's bytes that it replaces. The default model is the demo SmolLM2 (fetched once).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: the demo SmolLM2)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from launcher.bridge import local_tokens, tokens
    from tests.unit.test_prompt_count import claude_code_sized

    if args.model:
        folder = args.model
    else:
        from tests.smollm2 import smollm2_dir

        folder = str(smollm2_dir())
    messages, tools, size = claude_code_sized()
    started = time.perf_counter()
    counted = local_tokens.count(folder, messages, tools)
    first = time.perf_counter() - started
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        local_tokens.count(folder, messages, tools)
        times.append(time.perf_counter() - started)
    print(f"body {size} bytes: estimate {tokens.estimate(size)} tokens, counted {counted}")
    print(f"first count (load) {first * 1000:.0f} ms; then median {statistics.median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
