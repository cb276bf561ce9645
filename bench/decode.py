"""Decode speed and time to first token: our MLX server (streaming over HTTP) vs mlx-lm's `stream_generate`.

    python bench/decode.py [--model DIR] [--max-tokens 64] [--runs 3]

Both sides run the same greedy generation of the same chat prompt on SmolLM2-135M-Instruct (dense float32),
with the system OpenBLAS preloaded in this process and in the server (the bench re-executes itself with
LD_PRELOAD when it is missing). Prints a table; the target is a server decode rate of at least 0.95x direct.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preload import ensure_openblas

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Write a long story about a dragon who learns to bake bread."

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Run:
    ttft_s: float
    tokens: int
    decode_s: float

    @property
    def rate(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


class Direct:
    """mlx-lm's own `stream_generate` in this process: the floor the server is measured against."""

    def __init__(self, model_dir: Path) -> None:
        from mlx_lm import load

        loaded = load(str(model_dir))
        self.model, self.tokenizer = loaded[0], loaded[1]
        text = self.tokenizer.apply_chat_template(  # type: ignore[no-untyped-call]
            [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
        )
        self.prompt = self.tokenizer.encode(text, add_special_tokens=False)

    def run(self, max_tokens: int) -> Run:
        from mlx_lm import stream_generate

        started = time.perf_counter()
        first = last = started
        count = 0
        for response in stream_generate(self.model, self.tokenizer, self.prompt, max_tokens=max_tokens):
            last = time.perf_counter()
            if count == 0:
                first = last
            count = response.generation_tokens
        return Run(first - started, count, last - first)


@contextlib.contextmanager
def served(model_dir: Path) -> Iterator[str]:
    """Our server as a child process (it inherits LD_PRELOAD); yields its base URL once ready.

    Its prompt cache is off: every run sends the same prompt, which would otherwise be served from the cache
    (`bench/prompt_cache.py` measures that), and the TTFT column would compare a cache hit with a full prefill.
    """
    import httpx

    from tests.integration.mlx_server_process import free_port

    port = free_port()
    argv = [sys.executable, "-m", "adapters.mlx_server", "--model", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--cache-slots", "0"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_run(http: Any, max_tokens: int) -> Run:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return _one_stream(http, body)


def _one_stream(http: Any, body: dict[str, Any]) -> Run:
    import json

    started = time.perf_counter()
    first = last = None
    tokens = 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    assert first is not None and last is not None, "the server sent no text"
    return Run(first - started, tokens, last - first)


def main() -> None:
    ensure_openblas()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: the cached SmolLM2 test model)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.model is None:
        from tests.smollm2 import smollm2_dir

        args.model = smollm2_dir()
    import httpx

    # Runs alternate (direct, server, direct, ...) so both see the same background load on a shared machine;
    # the server idles while the direct side runs and the other way round.
    direct = Direct(args.model)
    direct_runs: list[Run] = []
    server_runs: list[Run] = []
    with served(args.model) as url, httpx.Client(base_url=url, timeout=300) as http:
        direct.run(args.max_tokens)  # warm-up of both sides
        server_run(http, args.max_tokens)
        for _ in range(args.runs):
            direct_runs.append(direct.run(args.max_tokens))
            server_runs.append(server_run(http, args.max_tokens))
    print_table(direct_runs, server_runs, args)


def print_table(direct: list[Run], served: list[Run], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    def median(runs: list[Run], key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs))

    base_rate, base_ttft = median(direct, "rate"), median(direct, "ttft_s")
    table = Table(title=f"decode, {args.model.name}, {args.max_tokens} new tokens, median of {args.runs}")
    for column in ("path", "TTFT s", "tokens", "decode tok/s", "rate vs direct", "TTFT vs direct"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, runs in (("mlx-lm stream_generate", direct), ("our server (HTTP stream)", served)):
        rate, ttft = median(runs, "rate"), median(runs, "ttft_s")
        table.add_row(
            name,
            f"{ttft:.3f}",
            str(int(median(runs, "tokens"))),
            f"{rate:.1f}",
            f"{rate / base_rate:.2f}x",
            f"{ttft / base_ttft:.2f}x",
        )
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
