"""Speculative decoding from the prompt: our MLX server with and without it, and `mlx_lm.server`, in one run.

    python bench/speculative.py [--model DIR] [--file-tokens 1500] [--max-tokens 256] [--repeats 3]
                                [--skip-official]

Three servers on the same model: ours with `--speculative ngram`, ours with `--speculative off`, and
`mlx_lm.server` (its defaults: batching, no draft model). Three workloads, each request greedy and streamed:

(a) **edit**: a source file of about `--file-tokens` tokens in the prompt, to be written out again whole with one
    change (a Write): nearly all of the reply is copied from the prompt;
(b) **free writing**: an explanation, nothing to copy;
(c) **4 at once**: four edit requests (different files) sent together.

Each request starts with a mark of its own (the repeat and workload), so no server reuses a prompt cached by an
earlier one; the servers take turns, rotating, so a machine whose load drifts slows them alike. Columns: decode
tokens/s (tokens after the first over the time after the first; for (c), all four together), the share of
drafted tokens kept and the tokens per verification pass (our speculative server's `/health` figures), time to
first token, and whether the reply is the same as our server's without speculation (it must be, greedy).
Medians over `--repeats`. Everything runs on SmolLM2-135M-Instruct (dense float32) with OpenBLAS preloaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from preload import ensure_openblas
from prompt_cache import REPO, SETTLE_S, Server, chat_chunks

from adapters.openblas import openblas_env

SPECULATIVE, PLAIN, OFFICIAL = "ours, speculative", "ours, plain", "mlx_lm.server"
# Files of this repository for the edit requests: real code, with a rename asked for.
FILES = [
    ("adapters/mlx_server/batch.py", "BatchRunner", "BatchDriver"),
    ("adapters/mlx_server/engine.py", "Ticket", "Pass"),
    ("adapters/mlx_server/reply.py", "Reply", "Answer"),
    ("adapters/mlx_server/cache_slots.py", "Lease", "Loan"),
]
FREE = "Explain in detail how a web browser decides whether to reuse a cached copy of a page."
CHARS_PER_TOKEN = 3.2  # source code in SmolLM2's tokenizer, roughly


@dataclass
class Timed:
    ttft: float
    first: float  # perf_counter at the first text
    last: float  # perf_counter at the last text
    tokens: int
    text: str


def edit_messages(mark: str, index: int, file_tokens: int) -> list[dict[str, str]]:
    path, old, new = FILES[index % len(FILES)]
    code = (REPO / path).read_text()[: int(file_tokens * CHARS_PER_TOKEN)]
    ask = f"Write the whole file out again, changing only the name {old} to {new} everywhere. Output only the file."
    return [{"role": "user", "content": f"{mark}\nHere is {path}:\n\n```python\n{code}\n```\n\n{ask}"}]


def free_messages(mark: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{mark}\n{FREE}"}]


def stream(server: Server, messages: list[dict[str, str]], max_tokens: int) -> Timed:
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    parts: list[str] = []
    usage: dict[str, Any] = {}
    for chunk in chat_chunks(server, body):
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                parts.append(text)
                last = time.perf_counter()
                first = first or last
        usage = chunk.get("usage") or usage
    first = first or time.perf_counter()
    return Timed(
        first - started, first, last or first, int(usage.get("completion_tokens") or len(parts)), "".join(parts)
    )


def speculation(server: Server) -> dict[str, int]:
    if server.name != SPECULATIVE:
        return {}
    figures: dict[str, int] = server.client.get(server.url + "/health").json()["queue"]["speculative"]
    return figures


@dataclass
class Result:
    rate: float
    ttft: float
    texts: list[str]
    acceptance: float | None
    per_step: float | None


def run(server: Server, workload: str, mark: str, args: argparse.Namespace) -> Result:
    time.sleep(SETTLE_S)
    before = speculation(server)
    if workload == "c":
        batch = [edit_messages(f"{mark} part {i}", i, args.file_tokens) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            timed = list(pool.map(lambda messages: stream(server, messages, args.max_tokens), batch))
        span = max(t.last for t in timed) - min(t.first for t in timed)
        rate = sum(t.tokens - 1 for t in timed) / span if span > 0 else 0.0
    else:
        messages = edit_messages(mark, 0, args.file_tokens) if workload == "a" else free_messages(mark)
        timed = [stream(server, messages, args.max_tokens)]
        span = timed[0].last - timed[0].first
        rate = (timed[0].tokens - 1) / span if span > 0 else 0.0
    after = speculation(server)
    acceptance = per_step = None
    if after:
        drafted = after["drafted"] - before["drafted"]
        steps = after["steps"] - before["steps"]
        acceptance = (after["accepted"] - before["accepted"]) / drafted if drafted else 0.0
        per_step = (after["tokens"] - before["tokens"]) / steps if steps else 1.0
    return Result(rate, statistics.median(t.ttft for t in timed), [t.text for t in timed], acceptance, per_step)


def main() -> int:
    ensure_openblas()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: SmolLM2-135M-Instruct, converted once)")
    parser.add_argument("--file-tokens", type=int, default=1500, help="size of the file in an edit request")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens each reply may write")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="a,b,c", help="which of a (edit), b (free writing), c (4 at once)")
    parser.add_argument("--skip-official", action="store_true", help="leave mlx_lm.server out")
    args = parser.parse_args()
    if args.model is None:
        from tests.smollm2 import smollm2_dir

        args.model = smollm2_dir()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-speculative-"))
    hub = work / "hf-hub"
    hub.mkdir()
    env = {**os.environ, **openblas_env(), "HF_HUB_OFFLINE": "1"}
    ours = [sys.executable, "-m", "adapters.mlx_server", "--model", str(args.model), "--cache-dir", ""]
    servers = [
        Server(SPECULATIVE, [*ours, "--port", "18751", "--speculative", "ngram"], env, 18751, None),
        Server(PLAIN, [*ours, "--port", "18752", "--speculative", "off"], env, 18752, None),
    ]
    if not args.skip_official:
        official = [sys.executable, "-m", "mlx_lm", "server", "--model", str(args.model), "--port", "18753"]
        servers.append(Server(OFFICIAL, official, {**env, "HF_HUB_CACHE": str(hub)}, 18753, None))
    workloads = args.workloads.split(",")
    results: dict[tuple[str, str], list[Result]] = {}
    try:
        for server in servers:
            server.client = httpx.Client(timeout=3600, limits=httpx.Limits(max_connections=8))
            print(f"{server.name}: starting")
            server.start(work)
        turn = 0
        for repeat in range(args.repeats):
            for workload in workloads:
                order = servers[turn % len(servers) :] + servers[: turn % len(servers)]
                turn += 1
                for server in order:
                    result = run(server, workload, f"[run {repeat} {workload}]", args)
                    results.setdefault((server.name, workload), []).append(result)
                    print(
                        f"  {server.name} ({workload}, repeat {repeat}): "
                        f"{result.rate:.1f} tok/s, ttft {result.ttft:.2f}s"
                    )
    finally:
        for server in servers:
            server.stop(kill=True)
            server.client.close()
    report(servers, workloads, results, args)
    print(f"total runtime {time.monotonic() - began:.0f}s")
    return 0


def report(
    servers: list[Server], workloads: list[str], results: dict[tuple[str, str], list[Result]], args: argparse.Namespace
) -> None:
    names = {"a": "edit (copy a file)", "b": "free writing", "c": "4 edits at once"}
    print(
        f"\nSmolLM2-135M-Instruct f32, OpenBLAS; ~{args.file_tokens}-token file, {args.max_tokens} tokens max, "
        f"medians of {args.repeats}"
    )
    print(
        f"{'workload':<20} {'server':<18} {'decode tok/s':>12} {'vs plain':>8} {'accepted':>8} {'tok/step':>8} "
        f"{'TTFT s':>7} {'same':>5}"
    )
    for workload in workloads:
        plain = results.get((PLAIN, workload), [])
        plain_rate = statistics.median(r.rate for r in plain) if plain else 0.0
        for server in servers:
            runs = results[(server.name, workload)]
            rate = statistics.median(r.rate for r in runs)
            accepted = [r.acceptance for r in runs if r.acceptance is not None]
            per_step = [r.per_step for r in runs if r.per_step is not None]
            same = all(r.texts == p.texts for r, p in zip(runs, plain, strict=True)) if plain else True
            ratio = rate / plain_rate if plain_rate else 0.0
            print(
                f"{names[workload]:<20} {server.name:<18} {rate:>12.1f} {ratio:>7.2f}x "
                f"{f'{statistics.median(accepted):.0%}' if accepted else '-':>8} "
                f"{f'{statistics.median(per_step):.2f}' if per_step else '-':>8} "
                f"{statistics.median(r.ttft for r in runs):>7.2f} {'yes' if same else 'NO':>5}"
            )


if __name__ == "__main__":
    sys.exit(main())
