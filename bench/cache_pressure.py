"""Prompt cache under memory pressure: sessions visited in turn with a RAM budget of about two of them.

    python bench/cache_pressure.py [--model DIR | --tiny] [--sessions 5] [--rounds 3] [--system-tokens 1000]

S sessions, each with its own system prompt of ~`--system-tokens` tokens (so no session can reuse another's
prefix), are visited in turn for R rounds: round 1 is each session's cold first turn, later rounds add the
last reply and a new question (a follow-up turn). Three servers:

- ours: our server with a RAM budget of about `--ram-sessions` sessions (`--cache-bytes`) and its disk tier;
- floor: our server with room for every session (the same requests with everything kept in RAM);
- mlx_lm.server: with the same byte budget (`--prompt-cache-bytes`).

The RAM budget is measured, not guessed: the floor serves session 1's first turn first, and the budget is
`--ram-sessions` times the bytes its slot then takes (from `/v1/cache`). Then every request goes to each
server in turn before the next request (one at a time, so a machine whose load drifts slows them alike).
TTFT is the time to the first streamed chunk with text; cached tokens come from the usage chunk; disk loads
from our `/v1/cache`. The table shows cold and follow-up TTFT p50/max, the follow-up p50 as a multiple of the
floor's, the median cached tokens of a follow-up and our disk loads.

`--tiny` runs a generated two-layer model (seconds; a smoke setting, e.g. `--tiny --system-tokens 300`);
the default model is SmolLM2-135M-Instruct (tests/smollm2.py), with OpenBLAS preloaded as in production.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from preload import ensure_openblas, openblas_env

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENTENCES = [
    "Read each file before editing it and follow the conventions already in the code.",
    "Run the project's checks after a change and fix what they report before moving on.",
    "Keep answers short and specific, and refer to code as path and line.",
    "Never log or commit secrets, keys or tokens; ask when a request would expose one.",
    "Prefer small focused changes over large rewrites, and explain the reason for each.",
    "When a command changes the system, say what it does and why before running it.",
]
QUESTIONS = ["What does the main module do?", "List the tests.", "Which file holds the config?", "Fix the bug."]


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=600))
    cold: list[float] = field(default_factory=list)
    follow: list[float] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, logs: Path, deadline_s: float = 300.0) -> None:
        with (logs / f"{self.name}.log").open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start; see {logs / (self.name + '.log')}")
            try:  # a one-token completion: mlx_lm.server's /health answers before its model is loaded
                ask(self, [{"role": "user", "content": "hi"}], 1)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready in {deadline_s}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.client.close()

    def cache(self) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(self.url + "/v1/cache").json()
        return body


def ask(server: Server, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, int, str]:
    """TTFT in seconds, `cached_tokens` and the reply text of one streamed greedy request."""
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    cached, text = 0, ""
    for chunk in chunks(server, body):
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece and first is None:
                first = time.perf_counter()
            text += piece
        details = (chunk.get("usage") or {}).get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or cached)
    return (first or time.perf_counter()) - started, cached, text


def chunks(server: Server, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    import json

    with server.client.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line.removeprefix("data: "))


def system_prompts(model: Path, sessions: int, tokens: int) -> list[str]:
    """`sessions` system prompts of about `tokens` tokens each, differing from their first words."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    prompts = []
    for index in range(sessions):
        text = f"Session {index + 1}: you work in project number {index * 7919 % 1000}."
        step = 0
        while len(tokenizer.encode(text)) < tokens:
            text += " " + SENTENCES[(index + step) % len(SENTENCES)]
            step += 1
        prompts.append(text)
    return prompts


def tiny_model(folder: Path) -> Path:
    from tests.tiny_model import make_tiny_llama

    return make_tiny_llama(folder / "tiny", context=4096)


def main() -> int:
    ensure_openblas()
    # A SIGTERM (a `timeout` around the run) unwinds through `finally`, which stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--tiny", action="store_true", help="a generated two-layer model: a quick smoke run")
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="visits of every session (the first is cold)")
    parser.add_argument("--system-tokens", type=int, default=1000)
    parser.add_argument("--ram-sessions", type=float, default=2.0, help="RAM budget, in sessions")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--skip-official", action="store_true", help="leave mlx_lm.server out")
    args = parser.parse_args()
    if args.rounds < 2 or args.sessions < 2:
        parser.error("--rounds and --sessions must be at least 2")
    work = Path(tempfile.mkdtemp(prefix="bench-cache-pressure-"))
    if args.tiny:
        args.model = tiny_model(work)
    elif args.model is None:
        from tests.smollm2 import smollm2_dir

        args.model = smollm2_dir()
    began = time.monotonic()
    prompts = system_prompts(args.model, args.sessions, args.system_tokens)
    env = {**os.environ, **openblas_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(work / "hub")}
    ours_argv = [sys.executable, "-m", "adapters.mlx_server", "--model", str(args.model)]
    floor = Server("floor", [*ours_argv, "--port", "18741", "--cache-dir", str(work / "floor-cache")], env, 18741)
    servers = [floor]
    try:
        print(f"floor: starting on {args.model}")
        floor.start(work)
        # Session 1's cold turn on the floor first: its slot's size sets the budget in bytes.
        histories = [[{"role": "system", "content": prompt}] for prompt in prompts]
        first = [*histories[0], {"role": "user", "content": QUESTIONS[0]}]
        floor_first = ask(floor, first, args.max_tokens)
        per_session = int(floor.cache()["totals"]["bytes"])
        budget = int(per_session * args.ram_sessions)
        print(f"one session's slot: {per_session / 1e6:.1f} MB; RAM budget {budget / 1e6:.1f} MB")
        ours = Server(
            "ours",
            [*ours_argv, "--port", "18742", "--cache-dir", str(work / "ours-cache"), "--cache-bytes", str(budget)],
            env,
            18742,
        )
        servers.append(ours)
        if not args.skip_official:
            official_argv = [sys.executable, "-m", "mlx_lm", "server", "--model", str(args.model), "--port", "18743"]
            servers.append(Server("mlx_lm.server", [*official_argv, "--prompt-cache-bytes", str(budget)], env, 18743))
        for server in servers[1:]:
            print(f"{server.name}: starting")
            server.start(work)
        loads = 0
        for round_ in range(args.rounds):
            for session, history in enumerate(histories):
                messages = [*history, {"role": "user", "content": QUESTIONS[round_ % len(QUESTIONS)]}]
                replies = []
                for server in servers:
                    if server is floor and round_ == 0 and session == 0:
                        ttft, cached, reply = floor_first
                    else:
                        ttft, cached, reply = ask(server, messages, args.max_tokens)
                    (server.cold if round_ == 0 else server.follow).append(ttft)
                    if round_:
                        server.cached.append(cached)
                    replies.append(reply)
                # The floor's reply goes into every server's history, so all see the same next prompt.
                history[:] = [*messages, {"role": "assistant", "content": replies[0] or "Done."}]
            print(f"round {round_ + 1}/{args.rounds} done ({time.monotonic() - began:.0f}s)")
        loads = int(ours.cache().get("disk", {}).get("loads", 0))
        report(servers, floor, loads, args)
    finally:
        for server in servers:
            server.stop()
    print(f"total runtime {time.monotonic() - began:.0f}s; logs in {work}")
    return 0


def report(servers: list[Server], floor: Server, loads: int, args: argparse.Namespace) -> None:
    floor_p50 = statistics.median(floor.follow)
    print(
        f"\n{args.sessions} sessions x {args.rounds} rounds, ~{args.system_tokens}-token system prompts, "
        f"RAM budget {args.ram_sessions:g} sessions, {args.max_tokens} new tokens, model {args.model.name}"
    )
    header = (
        f"{'server':<14} {'cold p50':>9} {'cold max':>9} {'follow p50':>11} {'follow max':>11} "
        f"{'x floor':>8} {'cached/follow':>14} {'disk loads':>11}"
    )
    print(header)
    print("-" * len(header))
    for server in servers:
        p50 = statistics.median(server.follow)
        disk = str(loads) if server.name == "ours" else "-"
        print(
            f"{server.name:<14} {statistics.median(server.cold):>8.3f}s {max(server.cold):>8.3f}s "
            f"{p50:>10.3f}s {max(server.follow):>10.3f}s {p50 / floor_p50:>7.2f}x "
            f"{statistics.median(server.cached):>14.0f} {disk:>11}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
