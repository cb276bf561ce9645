"""Concurrency benchmark: Claude Code's side requests and parallel sessions on one local model.

    python bench/concurrency.py [--model DIR] [--sessions 1,2,4,8] [--reply-tokens 192] [--repeats 3]
                                [--session-repeats 2]

Three servers on the same model and prompts, exercised one at a time and in rotating order: our MLX server
(batched, its defaults), our server at `--decode-concurrency 1` (one request at a time, as it ran before
batching), and `mlx_lm.server` with its defaults. OpenBLAS is preloaded in every process.

1. **A side request beside a reply.** A Claude-Code-shaped turn (the shared ~1k-token system prompt with tools)
   streams a `--reply-tokens` reply; once it has decoded for a second, a short title request is sent: its time
   to first token, against the same kind of request on the idle server (each repeat uses a new title).
2. **N sessions at once** (`--sessions`): N conversations start together, each with the shared system prompt,
   its own first message and `--turns` turns of `--turn-tokens`-token replies, each turn sent when its previous
   one ends. Aggregate throughput (generated tokens / wall time), p50/p95 time to first token over every
   request, and for each follow-up turn its time against the floor (mlx-lm in this process, prefilling only
   what the server did not have cached) with the cached token count the server reported, which must cover at
   least the previous turn's prompt.

Every reply runs to its token limit (end-of-sequence tokens are biased away), so each server does the same work.
Prints the tables and writes `bench/out/concurrency.png`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from preload import ensure_openblas, openblas_env
from prompt_cache import REPO, SETTLE_S, Floor, Server, chat_chunks

SIDE_SYSTEM = "You write short titles for conversations. Reply with a title of at most five words."
FIRST_ASKS = [
    "Find where the configuration is loaded and explain it.",
    "Run the tests and tell me which ones fail.",
    "Look at the logging setup and suggest one change.",
    "List the modules that import the parser.",
    "Explain what the command line entry point does.",
    "Check which functions lack type annotations.",
    "Summarize the error handling in the proxy.",
    "Find the slowest test and say why it is slow.",
]
NEXT_ASKS = ["Go on with the next step.", "Now make that change and show the diff."]


@dataclass
class Timed:
    """One streamed request as the client saw it."""

    ttft: float
    generated: int
    cached: int | None
    prompt_tokens: int | None
    reply: str
    messages: list[dict[str, str]] = field(default_factory=list)
    turn: int = 1


# Token ids whose logit is pushed down so every reply runs to its max_tokens: every server then does the same
# work (greedy replies that end early at an end-of-sequence token differ in length between servers, since a
# batch's arithmetic may change a near tie, and a shorter reply is a smaller batch for the rest of the run).
NO_END: dict[str, float] = {}


def stream_chat(server: Server, messages: list[dict[str, str]], max_tokens: int, on_token: Any = None) -> Timed:
    """Stream one greedy chat completion, run to `max_tokens`; `on_token` is called at the first text."""
    body: dict[str, Any] = {
        "logit_bias": NO_END,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    usage: dict[str, Any] = {}
    reply: list[str] = []
    for chunk in chat_chunks(server, body):
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                reply.append(text)
                if first is None:
                    first = time.perf_counter()
                    if on_token is not None:
                        on_token()
        usage = chunk.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    return Timed(
        (first or time.perf_counter()) - started,
        int(usage.get("completion_tokens") or 0),
        details.get("cached_tokens"),
        usage.get("prompt_tokens"),
        "".join(reply),
        messages,
    )


def side_request(server: Server, label: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SIDE_SYSTEM}, {"role": "user", "content": f"Title for: {label}"}]


def side_while_streaming(server: Server, system: str, reply_tokens: int, repeat: int) -> tuple[float, float]:
    """(idle TTFT, TTFT while a reply streams) of a side request."""
    time.sleep(SETTLE_S)
    idle = stream_chat(server, side_request(server, f"idle {repeat} {server.name}"), 8).ttft
    time.sleep(SETTLE_S)
    main = [{"role": "system", "content": system}, {"role": "user", "content": f"[side {repeat}] {FIRST_ASKS[0]}"}]
    decoding = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(stream_chat, server, main, reply_tokens, decoding.set)
        if not decoding.wait(600):
            raise RuntimeError(f"{server.name}: the main reply never started")
        time.sleep(1.0)  # well into decoding
        busy = stream_chat(server, side_request(server, f"busy {repeat} {server.name}"), 8).ttft
        reply.result()
    return idle, busy


def sessions_at_once(
    server: Server, system: str, sessions: int, turns: int, turn_tokens: int, run: str
) -> tuple[float, list[Timed]]:
    """Wall time and every request of `sessions` conversations run at once."""

    def conversation(index: int) -> list[Timed]:
        ask = FIRST_ASKS[index % len(FIRST_ASKS)]
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"[{run} s{index}] {ask}"}]
        timed: list[Timed] = []
        for turn in range(1, turns + 1):
            result = stream_chat(server, list(messages), turn_tokens)
            result.turn = turn
            timed.append(result)
            messages += [
                {"role": "assistant", "content": result.reply},
                {"role": "user", "content": NEXT_ASKS[(turn - 1) % len(NEXT_ASKS)]},
            ]
        return timed

    time.sleep(SETTLE_S)
    started = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        results = [r for conv in pool.map(conversation, range(sessions)) for r in conv]
    return time.perf_counter() - started, results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class FollowUpFloor:
    """mlx-lm in this process: prefill what a server did not have cached on a cache holding the rest, plus one token.

    The shared system prompt is prefilled once and copied for each follow-up (each takes seconds on a CPU).
    """

    def __init__(self, floor: Floor, system: str) -> None:
        self._floor = floor
        self._base = floor.encode([{"role": "system", "content": system}])[:-8]  # a prefix of every prompt
        self._base_cache: list[Any] | None = None
        self._seen: dict[tuple[tuple[int, ...], int], float] = {}

    def ttft(self, messages: list[dict[str, str]], reused: int) -> float:
        import copy

        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        model = self._floor.model
        tokens = self._floor.encode(messages)
        reused = min(reused, len(tokens) - 1)
        key = (tuple(tokens), reused)
        if key in self._seen:
            return self._seen[key]
        if self._base_cache is None:
            self._base_cache = make_prompt_cache(model)
            model(mx.array(self._base)[None], cache=self._base_cache)
            mx.eval([layer.state for layer in self._base_cache])
        shared = len(self._base) if tokens[: len(self._base)] == self._base and reused >= len(self._base) else 0
        cache = copy.deepcopy(self._base_cache) if shared else make_prompt_cache(model)
        if reused > shared:
            model(mx.array(tokens[shared:reused])[None], cache=cache)
        mx.eval([layer.state for layer in cache])
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        logits = model(mx.array(tokens[reused:])[None], cache=cache)[:, -1, :]
        mx.eval(mx.argmax(logits, axis=-1))
        self._seen[key] = time.perf_counter() - started
        return self._seen[key]


def main() -> int:
    ensure_openblas()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: SmolLM2-135M-Instruct, converted once)")
    parser.add_argument("--context-tokens", type=int, default=1000, help="shared system prompt + tools, in tokens")
    parser.add_argument("--sessions", default="1,2,4,8", help="concurrent session counts")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--turn-tokens", type=int, default=64)
    parser.add_argument("--reply-tokens", type=int, default=192, help="the reply a side request arrives beside")
    parser.add_argument("--repeats", type=int, default=3, help="side-request measurements per server")
    parser.add_argument(
        "--session-repeats", type=int, default=2, help="runs of each session count per server (medians are shown)"
    )
    parser.add_argument("--skip-official", action="store_true", help="leave mlx_lm.server out")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "concurrency.png")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    if args.model is None:
        from tests.smollm2 import smollm2_dir

        args.model = smollm2_dir()
    began = time.monotonic()
    floor = Floor(args.model, 1)
    NO_END.update({str(token): -100.0 for token in floor.tokenizer.eos_token_ids})
    system = floor.system_prompt(args.context_tokens)
    work = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    hub = work / "hf-hub"
    hub.mkdir()
    env = {**os.environ, **openblas_env(), "HF_HUB_OFFLINE": "1"}
    ours = [sys.executable, "-m", "adapters.mlx_server", "--model", str(args.model), "--cache-dir", str(work / "c")]
    servers = [
        Server("ours", [*ours, "--port", "18741"], env, 18741, None),
        Server("ours, one at a time", [*ours, "--port", "18742", "--decode-concurrency", "1"], env, 18742, None),
    ]
    if not args.skip_official:
        official = [sys.executable, "-m", "mlx_lm", "server", "--model", str(args.model), "--port", "18743"]
        servers.append(Server("mlx_lm.server", official, {**env, "HF_HUB_CACHE": str(hub)}, 18743, None))
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    side: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}
    runs: dict[tuple[str, int], list[tuple[float, list[Timed]]]] = {}
    try:
        for server in servers:
            server.client = httpx.Client(timeout=1800, limits=limits)
            print(f"{server.name}: starting")
            server.start(work)
            stream_chat(server, [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}], 1)
        for repeat in range(args.repeats):
            for server in servers[repeat % len(servers) :] + servers[: repeat % len(servers)]:
                side[server.name].append(side_while_streaming(server, system, args.reply_tokens, repeat))
                print(f"  {server.name} side request: idle/busy {side[server.name][-1]}")
        for repeat in range(args.session_repeats):
            for position, n in enumerate(counts, start=repeat):
                for server in servers[position % len(servers) :] + servers[: position % len(servers)]:
                    label = f"n{n} r{repeat}"
                    wall, timed = sessions_at_once(server, system, n, args.turns, args.turn_tokens, label)
                    runs.setdefault((server.name, n), []).append((wall, timed))
                    print(f"  {server.name} N={n}: {sum(t.generated for t in timed) / wall:.1f} tok/s in {wall:.1f}s")
    finally:
        for server in servers:
            server.stop(kill=True)
            server.client.close()
    report(FollowUpFloor(floor, system), servers, side, runs, counts, args)
    print(f"total runtime {time.monotonic() - began:.0f}s")
    return 0


def report(
    floor: FollowUpFloor,
    servers: list[Server],
    side: dict[str, list[tuple[float, float]]],
    runs: dict[tuple[str, int], list[tuple[float, list[Timed]]]],
    counts: list[int],
    args: argparse.Namespace,
) -> None:
    names = [s.name for s in servers]
    print(
        f"\nA side request (title, 8 tokens) while a {args.reply_tokens}-token reply streams, median of {args.repeats}"
    )
    print(f"{'server':<22}{'idle TTFT':>11}{'busy TTFT':>11}{'busy/idle':>11}")
    side_ratio: dict[str, float] = {}
    for name in names:
        idle = statistics.median(i for i, _ in side[name])
        busy = statistics.median(b for _, b in side[name])
        side_ratio[name] = busy / idle
        print(f"{name:<22}{idle:>11.3f}{busy:>11.3f}{busy / idle:>11.2f}")

    print(
        f"\nN sessions at once: {args.turns} turns of {args.turn_tokens} tokens each, shared system prompt; "
        f"medians of {args.session_repeats} runs (TTFT percentiles over every request of them)"
    )
    columns = (
        f"{'N':>3}{'wall s':>8}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p95':>10}{'follow-up/floor':>17}{'cached ok':>11}"
    )
    print(f"{'server':<22}{columns}")
    throughput: dict[tuple[str, int], float] = {}
    follow_rows: list[str] = []
    for n in counts:
        for name in names:
            wall = statistics.median(w for w, _ in runs[(name, n)])
            timed = [t for _, run in runs[(name, n)] for t in run]
            throughput[(name, n)] = statistics.median(sum(t.generated for t in run) / w for w, run in runs[(name, n)])
            ttfts = [t.ttft for t in timed]
            ratios, ok = [], True
            for t in timed:
                if t.turn == 1:
                    continue
                previous = next(
                    p for p in timed if p.turn == t.turn - 1 and p.messages == t.messages[: len(p.messages)]
                )
                cached = t.cached or 0
                ok = ok and previous.prompt_tokens is not None and cached >= previous.prompt_tokens
                ratios.append(t.ttft / floor.ttft(t.messages, cached))
                follow_rows.append(
                    f"{name} N={n} turn {t.turn}: cached {cached} of {t.prompt_tokens} "
                    f"(the previous turn's prompt: {previous.prompt_tokens})"
                )
            follow = f"{statistics.median(ratios):.2f}" if ratios else "-"
            print(
                f"{name:<22}{n:>3}{wall:>8.1f}{throughput[(name, n)]:>8.1f}{percentile(ttfts, 0.5):>10.3f}"
                f"{percentile(ttfts, 0.95):>10.3f}{follow:>17}{'yes' if ok else 'NO':>11}"
            )
    for row in follow_rows:
        print("  " + row)
    batched, single = names[0], names[1]
    four = 4 if 4 in counts else counts[-1]
    print(
        f"\ntargets: side request busy/idle {side_ratio[batched]:.2f} (<= 2); "
        f"N={four} throughput {throughput[(batched, four)]:.1f} tok/s = "
        f"{throughput[(batched, four)] / throughput[(single, four)]:.2f}x one at a time (>= 2.5)"
        + (
            f", {throughput[(batched, four)] / throughput[('mlx_lm.server', four)]:.2f}x mlx_lm.server (>= 1)"
            if "mlx_lm.server" in names
            else ""
        )
    )
    plot(names, side, throughput, runs, counts, args.out)


def plot(
    names: list[str],
    side: dict[str, list[tuple[float, float]]],
    throughput: dict[tuple[str, int], float],
    runs: dict[tuple[str, int], list[tuple[float, list[Timed]]]],
    counts: list[int],
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        idle = statistics.median(v for v, _ in side[name])
        busy = statistics.median(v for _, v in side[name])
        left.bar([0 + i * width, 1 + i * width], [idle, busy], width, label=name)
        middle.plot(counts, [throughput[(name, n)] for n in counts], marker="o", label=name)
        ttfts = [[t.ttft for _, run in runs[(name, n)] for t in run] for n in counts]
        right.plot(counts, [percentile(values, 0.5) for values in ttfts], marker="o")
    left.set_xticks([0.4, 1.4], ["idle", "beside a reply"])
    left.set_ylabel("side request TTFT (s)")
    middle.set_xlabel("sessions at once")
    middle.set_ylabel("generated tokens / s")
    right.set_xlabel("sessions at once")
    right.set_ylabel("TTFT p50 (s)")
    left.legend()
    fig.suptitle("SmolLM2-135M on a 2-core CPU: side requests and parallel sessions")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


if __name__ == "__main__":
    sys.exit(main())
