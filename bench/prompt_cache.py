"""Prompt-cache benchmark: time to first token per turn of a Claude-Code-shaped session, and after a SIGKILL.

    python bench/prompt_cache.py [--model DIR] [--context-tokens 1000] [--turns 8] [--sessions 3]

The session: a long system prompt with tool definitions, then turns that each add the assistant's reply,
a tool result and a user message, with a short unrelated side request (a title) after every turn. It is
replayed `--sessions` times (each session's first user message is marked, so the sessions share only the
system prompt), which gives every turn three measurements; the table shows their median. The first turn
of the first session has nothing to reuse ("turn 1 cold"); the later first turns reuse the system prompt.

Columns: the floor (mlx-lm in this process: prefill only the tokens not in a kept cache, plus one decode
step), our server, `mlx_lm.server`, and MLX-Textgen when the virtual environment named by
$ANYCLAUDE_TEXTGEN_VENV (default /tmp/textgen, as in the README) has it (streaming only, as on Linux it
fails otherwise). A first pass writes the script: each reply is mlx-lm's own greedy output, so every
server gets byte-identical prompts. Then each request is timed on the floor and on every server in turn
before the next, so a machine whose load drifts over minutes slows them alike. Every server is called
through one keep-alive client. TTFT is the time to the first streamed chunk with text. After the
sessions, every server is killed with SIGKILL, restarted, and sent one more turn of the last session
(MLX-Textgen keeps a disk cache of its own). Everything runs on SmolLM2-135M-Instruct (dense float32)
with OpenBLAS preloaded in every process. Writes `bench/out/prompt_cache.png`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from preload import ensure_openblas, openblas_env

REPO = Path(__file__).resolve().parents[1]
TEXTGEN_PYTHON = Path(os.environ.get("ANYCLAUDE_TEXTGEN_VENV", "/tmp/textgen")) / "bin" / "python"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

INSTRUCTIONS = [
    "You are an interactive command line tool that helps users with software engineering tasks.",
    "Use the instructions below and the tools available to you to assist the user.",
    "Be concise, direct and to the point; answer in fewer than four lines unless asked for detail.",
    "Before editing a file, read it, understand the surrounding code and follow its conventions.",
    "Never introduce code that exposes or logs secrets and keys, and never commit them to the repository.",
    "When you run a command that changes the system, explain what it does and why you are running it.",
    "Prefer editing existing files over creating new ones; never create documentation unless asked.",
    "Use the task list tool to plan work with several steps and mark each step done as soon as it is.",
    "After a change, run the project's lint and type checks and its tests, and fix what they report.",
    "Refer to code as path:line so the user can navigate to it; keep answers short and specific.",
]
TOOL_NAMES = ["Bash", "Read", "Edit", "Write", "Glob", "Grep", "LS", "TodoWrite", "WebFetch", "Task"]
# Pause before each timed request. After a matrix product OpenBLAS keeps its worker threads spinning for
# ~0.1 s (measured here: a whole core for 100-150 ms), so a request timed right after another process's
# would share the CPU with that process's spinning threads. Files written before it (our server's and
# MLX-Textgen's caches) are flushed first, or the kernel would write them back ~30 s later, in the
# middle of some other request.
SETTLE_S = 0.25
READY_MESSAGES = [{"role": "user", "content": "Hi"}]
SIDE_SYSTEM = "You write short titles for conversations. Reply with a title of at most five words."
USER_ASKS = [
    "Find where the configuration is loaded and explain it.",
    "Run the tests and tell me which ones fail.",
    "Fix the failing test in the parser module.",
    "Add a type annotation to the load function.",
    "Rename the helper to something clearer.",
    "Check the linter output once more.",
    "Write a short summary of the changes.",
    "Look at the logging setup next.",
    "Make the error message more helpful.",
    "Commit nothing yet; list the touched files.",
]


@dataclass
class Request:
    session: int
    kind: str  # "turn", "side" or "restart"
    index: int
    messages: list[dict[str, str]]
    tokens: list[int] = field(default_factory=list)
    expected_reuse: int = 0
    floor_s: float = 0.0

    @property
    def label(self) -> str:
        if self.session == 0 and self.kind == "turn" and self.index == 1:
            return "turn 1 cold"  # only the readiness request to reuse; later first turns reuse the system prompt
        return f"{self.kind} {self.index}"


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


class Floor:
    """mlx-lm in this process: writes the script (greedy replies) and times the ideal reuse of each request."""

    def __init__(self, model_dir: Path, max_tokens: int) -> None:
        from mlx_lm import load

        loaded = load(str(model_dir))
        self.model, self.tokenizer = loaded[0], loaded[1]
        self.max_tokens = max_tokens
        self.held: list[list[int]] = []  # every sequence a server with unlimited slots would hold
        self.caches: list[tuple[list[int], list[Any]]] = []  # the most recent few, with their caches

    def reset(self, ready: Request) -> None:
        """Forget every kept cache and answer the readiness request, as a freshly started server has."""
        self.held, self.caches = [], []
        self.max_tokens, max_tokens = 1, self.max_tokens
        self.run(ready)
        self.max_tokens = max_tokens

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(  # type: ignore[no-untyped-call]
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def system_prompt(self, target_tokens: int) -> str:
        tools = [
            json.dumps(
                {
                    "name": name,
                    "description": f"{name}: {INSTRUCTIONS[i % len(INSTRUCTIONS)]}",
                    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
                }
            )
            for i, name in enumerate(TOOL_NAMES)
        ]
        lines, index = ["# Tools", *tools, "# Instructions"], 0
        while len(self.tokenizer.encode("\n".join(lines))) < target_tokens:
            lines.append(f"{index + 1}. {INSTRUCTIONS[index % len(INSTRUCTIONS)]}")
            index += 1
        return "\n".join(lines)

    def run(self, request: Request) -> str:
        """Time prefill-from-kept-cache plus one decode step, then decode the rest untimed; returns the reply."""
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        tokens = request.tokens
        cap = len(tokens) - 1
        request.expected_reuse = max((min(common_prefix(h, tokens), cap) for h in self.held), default=0)
        source, reuse = None, 0
        for held, cache in self.caches:
            usable = min(common_prefix(held, tokens), cap)
            if usable > reuse:
                source, reuse = (held, cache), usable
        if source is None:
            cache = make_prompt_cache(self.model)
        else:
            cache = copy.deepcopy(source[1])
            trim_prompt_cache(cache, len(source[0]) - reuse)
        mx.eval([layer.state for layer in cache])
        started = time.perf_counter()
        logits = self.model(mx.array(tokens[reuse:])[None], cache=cache)[:, -1, :]
        token = mx.argmax(logits, axis=-1)
        mx.eval(token)
        request.floor_s = time.perf_counter() - started
        if reuse < request.expected_reuse:  # the kept cache was dropped: the floor is this much too slow
            print(f"  note: floor reused {reuse} < {request.expected_reuse} for {request.label}", file=sys.stderr)
        generated = [cast(int, token.item())]
        eos = set(self.tokenizer.eos_token_ids)
        while len(generated) < self.max_tokens and generated[-1] not in eos:
            logits = self.model(mx.array(generated[-1:])[None], cache=cache)[:, -1, :]
            generated.append(cast(int, mx.argmax(logits, axis=-1).item()))
        # A batching server (mlx-lm's BatchGenerator, ours and mlx_lm.server) computes a step ahead, so its
        # cache has fed every token it yielded, the last one too (a reply of one token: none). The floor
        # feeds the last one as well, untimed, to keep the same cache.
        fed = 0 if len(generated) == 1 else len(generated)
        if fed:
            mx.eval(self.model(mx.array(generated[-1:])[None], cache=cache))
        self.held.append(tokens + generated[:fed])
        self.caches = [*self.caches[-5:], (tokens + generated[:fed], cache)]
        reply = [t for t in generated if t not in eos]
        return str(self.tokenizer.decode(reply))


def build_script(floor: Floor, context_tokens: int, sessions: int, turns: int) -> list[Request]:
    """All requests in order, each with its tokens, expected reuse and floor time (the floor pass)."""
    system = floor.system_prompt(context_tokens)
    script: list[Request] = []
    # Every server first answers the readiness request (one token of "Hi"); it is a slot too.
    ready = Request(-1, "ready", 0, READY_MESSAGES)
    ready.tokens = floor.encode(ready.messages)
    floor.reset(ready)
    script.append(ready)
    for session in range(sessions):
        history: list[dict[str, str]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"[session {session + 1}] Please look at this repository. {USER_ASKS[0]}"},
        ]
        last = turns + (1 if session == sessions - 1 else 0)  # the last session's extra turn follows the restart
        for turn in range(1, last + 1):
            kind = "restart" if turn > turns else "turn"
            request = Request(session, kind, turn, list(history))
            request.tokens = floor.encode(request.messages)
            reply = floor.run(request)
            script.append(request)
            if kind == "restart":
                break
            ask = USER_ASKS[turn % len(USER_ASKS)]
            title = f"Session {session + 1}, turn {turn}: {ask}"  # unique: no side request repeats another
            side = Request(
                session, "side", turn, [{"role": "system", "content": SIDE_SYSTEM}, {"role": "user", "content": title}]
            )
            side.tokens = floor.encode(side.messages)
            floor.run(side)
            script.append(side)
            listing = "\n".join(f"src/module_{session}_{turn}_{i}.py  {120 + 7 * i} lines" for i in range(8))
            history += [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": f"<tool_result>\n{listing}\n</tool_result>"},
                {"role": "user", "content": ask},
            ]
            print(f"  script s{session + 1} {request.label}: {len(request.tokens)} tokens")
    return script


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    model_field: str | None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    # One keep-alive client per server, as a proxy holds one: a new httpx client per request builds an SSL
    # context (~27 ms here), which would be counted in every TTFT.
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=600))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, logs: Path, deadline_s: float = 300.0) -> float:
        self.log = logs / f"{self.name}.log"
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        while time.monotonic() - started < deadline_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start; see {self.log}")
            try:  # readiness is a one-token completion: mlx_lm.server's /health is up before the model is
                ttft(self, READY_MESSAGES, 1)
                return time.monotonic() - started
            except (httpx.HTTPError, RuntimeError):
                time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready in {deadline_s}s; see {self.log}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def ttft(server: Server, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, int | None]:
    """Seconds to the first streamed chunk with text, and the `cached_tokens` the usage chunk reports."""
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if server.model_field:
        body["model"] = server.model_field
    started = time.perf_counter()
    first: float | None = None
    cached: int | None = None
    for chunk in chat_chunks(server, body):
        if first is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
            first = time.perf_counter()
        usage = chunk.get("usage") or {}
        if usage.get("prompt_tokens_details"):
            cached = usage["prompt_tokens_details"].get("cached_tokens")
    return (first or time.perf_counter()) - started, cached


def chat_chunks(server: Server, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The JSON chunks of one streamed chat completion; raises RuntimeError for an HTTP error."""
    with server.client.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}: HTTP {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if line.startswith("data: ") and line.strip() != "data: [DONE]":
                yield json.loads(line.removeprefix("data: "))


@dataclass
class Replay:
    """The floor and the running servers, replaying the script request by request."""

    floor: Floor
    servers: list[Server]
    script: list[Request]
    max_tokens: int
    results: dict[str, dict[int, tuple[float, int | None]]]
    notes: list[str]
    saves: list[float] = field(default_factory=list)  # seconds until our server had saved, after each request

    def session(self, session: int) -> None:
        """One session (the restart turn aside): each request on the floor, then on every server, in turn.

        Each request is timed everywhere within seconds, so a machine whose speed drifts slows all alike; who
        goes first rotates, to even out any cost of following another process, and each waits `SETTLE_S`
        first. Our server saves its caches once idle, so it is left to finish before anyone else's request
        is timed.
        """
        for position, request in enumerate(self.script):
            if request.session != session or request.kind == "restart":
                continue
            runners: list[Server | None] = [None, *(s for s in self.servers if s.name in self.results)]
            first = position % len(runners)
            for runner in runners[first:] + runners[:first]:
                os.sync()
                time.sleep(SETTLE_S)
                if runner is None:
                    self.floor.run(request)
                    print(f"  floor s{session + 1} {request.label}: {request.floor_s:.3f}s")
                else:
                    self._time(runner, position, request)

    def _time(self, server: Server, position: int, request: Request) -> None:
        try:
            self.results[server.name][position] = ttft(server, request.messages, self.max_tokens)
            if server.name == "ours":
                self.saves.append(wait_saved(server))
        except (RuntimeError, httpx.HTTPError) as exc:
            self.notes.append(f"{server.name}: stopped in session {request.session + 1} ({exc})")
            del self.results[server.name]
            server.stop(kill=True)
            return
        seconds, cached = self.results[server.name][position]
        said = (
            "" if cached in (None, request.expected_reuse) else f" (cached {cached}, expected {request.expected_reuse})"
        )
        print(f"  {server.name} s{request.session + 1} {request.label}: {seconds:.3f}s{said}")


def wait_saved(server: Server, deadline_s: float = 30.0) -> float:
    """Seconds until our server reports every slot written (it saves once idle for half a second)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        persistence = server.client.get(server.url + "/v1/cache", timeout=5).json()["persistence"]
        if persistence["unsaved_tokens"] == 0 and not persistence["writing"]:
            return time.monotonic() - started
        time.sleep(0.1)
    return float("nan")


def restart_turn(server: Server, logs: Path, script: list[Request], max_tokens: int) -> tuple[float, int | None, float]:
    server.stop(kill=True)
    ready = server.start(logs)
    request = next(r for r in script if r.kind == "restart")
    took, cached = ttft(server, request.messages, max_tokens)
    print(f"  {server.name} after SIGKILL: ready in {ready:.1f}s, first turn {took:.3f}s, cached {cached}")
    return took, cached, ready


def main() -> int:
    ensure_openblas()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: SmolLM2-135M-Instruct, converted once)")
    parser.add_argument("--context-tokens", type=int, default=1000, help="system prompt + tools, in tokens")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=3, help="replays of the session (the median is shown)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--skip-textgen", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "prompt_cache.png")
    args = parser.parse_args()
    if args.turns < 2 or args.sessions < 1:
        parser.error("--turns must be at least 2 (a restart is compared with a warm follow-up), --sessions at least 1")
    if args.model is None:
        from tests.smollm2 import smollm2_dir

        args.model = smollm2_dir()
    began = time.monotonic()
    print(f"script pass (mlx-lm in-process, greedy replies) on {args.model}")
    floor = Floor(args.model, args.max_tokens)
    script = build_script(floor, args.context_tokens, args.sessions, args.turns)

    work = Path(tempfile.mkdtemp(prefix="bench-prompt-cache-"))
    hub = work / "hf-hub"
    hub.mkdir()
    base_env = {**os.environ, **openblas_env(), "HF_HUB_OFFLINE": "1"}
    ours_argv = [sys.executable, "-m", "adapters.mlx_server", "--model", str(args.model), "--port", "18731"]
    ours = Server(
        "ours",
        [*ours_argv, "--cache-dir", str(work / "cache")],
        base_env,
        18731,
        None,
    )
    official = Server(
        "mlx_lm.server",
        [sys.executable, "-m", "mlx_lm", "server", "--model", str(args.model), "--port", "18732"],
        {**base_env, "HF_HUB_CACHE": str(hub)},
        18732,
        None,
    )
    servers = [ours, official]
    if not args.skip_textgen and TEXTGEN_PYTHON.is_file():
        textgen_argv = ["bash", str(REPO / "scripts" / "mlx-textgen-server.sh"), "-m", str(args.model), "-p", "18733"]
        textgen_env = {**base_env, "ANYCLAUDE_PYTHON": str(TEXTGEN_PYTHON), "HOME": str(work / "textgen-home")}
        servers.append(Server("mlx-textgen", [*textgen_argv, "--model-name", "smollm2"], textgen_env, 18733, "smollm2"))
    results: dict[str, dict[int, tuple[float, int | None]]] = {}
    restarts: dict[str, tuple[float, int | None, float]] = {}
    notes: list[str] = []
    try:
        running: list[Server] = []
        for server in servers:
            print(f"{server.name}: starting")
            try:
                server.start(work)
                running.append(server)
                results[server.name] = {}
            except (RuntimeError, httpx.HTTPError) as exc:
                notes.append(f"{server.name}: skipped ({exc})")
                server.stop(kill=True)
        floor.reset(script[0])
        replay = Replay(floor, running, script, args.max_tokens, results, notes)
        for session in range(args.sessions):
            replay.session(session)
        if replay.saves:
            notes.append(f"ours: every slot on disk a median {statistics.median(replay.saves):.2f}s after a request")
        running = [server for server in running if server.name in results]
        del floor  # frees its caches before the restarts
        for server in running:
            restarts[server.name] = restart_turn(server, work, script, args.max_tokens)
            server.stop()
    finally:
        for server in servers:
            server.stop(kill=True)
            server.client.close()
    report(script, results, restarts, notes, args)
    print(f"total runtime {time.monotonic() - began:.0f}s")
    return 0


def report(
    script: list[Request],
    results: dict[str, dict[int, tuple[float, int | None]]],
    restarts: dict[str, tuple[float, int | None, float]],
    notes: list[str],
    args: argparse.Namespace,
) -> None:
    names = list(results)
    rows: dict[str, list[int]] = {}
    for position, request in enumerate(script):
        if request.kind in ("turn", "side"):
            rows.setdefault(request.label, []).append(position)

    # In session order: the cold first turn, the warm first turn, then each turn's side request and the next turn.
    def order(row: tuple[str, list[int]]) -> tuple[int, bool, bool]:
        first = script[row[1][0]]
        return first.index, first.kind != "turn", not row[0].endswith("cold")

    rows = dict(sorted(rows.items(), key=order))
    header = f"{'request':<12}{'tokens':>7}{'new':>6}{'floor':>8}" + "".join(f"{n:>15}" for n in names)
    print(f"\nTTFT in seconds, median over {args.sessions} sessions (turn 1: the later ones; tokens/new: the last)")
    print(header + f"{'ours/floor':>12}{'cached ok':>11}")
    mismatches, worst_ratio = 0, 0.0
    slower: dict[str, list[str]] = {name: [] for name in names if name != "ours"}
    plot_rows: list[tuple[str, float, dict[str, float]]] = []
    for label, positions in rows.items():
        last = script[positions[-1]]
        floor_s = statistics.median(script[p].floor_s for p in positions)
        medians = {n: statistics.median(results[n][p][0] for p in positions) for n in names}
        ok = all(
            results.get("ours", {}).get(p, (0, script[p].expected_reuse))[1] == script[p].expected_reuse
            for p in positions
        )
        mismatches += not ok
        ratio = medians.get("ours", float("nan")) / floor_s
        follow_up = not label.startswith("turn 1")  # a first turn is a new conversation, not a follow-up
        if follow_up:
            worst_ratio = max(worst_ratio, ratio)
            for peer, labels in slower.items():
                if "ours" in medians and medians["ours"] > medians[peer]:
                    labels.append(label)
        cells = "".join(f"{medians[n]:>15.3f}" for n in names)
        new = len(last.tokens) - last.expected_reuse
        print(
            f"{label:<12}{len(last.tokens):>7}{new:>6}{floor_s:>8.3f}{cells}{ratio:>12.2f}{'yes' if ok else 'NO':>11}"
        )
        plot_rows.append((label, floor_s, medians))
    restart_request = next(r for r in script if r.kind == "restart")
    print(f"\nafter SIGKILL + restart (one more turn of the last session, {len(restart_request.tokens)} tokens):")
    warm = (
        statistics.median(
            statistics.median(results["ours"][p][0] for p in positions)
            for label, positions in rows.items()
            if label.startswith("turn") and not label.startswith("turn 1")
        )
        if "ours" in results
        else float("nan")
    )
    for name, (took, cached, ready) in restarts.items():
        print(f"  {name:<14} ready {ready:6.1f}s   first turn {took:7.3f}s   cached {cached}")
    print(
        f"  floor (kept cache, no restart): {restart_request.floor_s:.3f}s; "
        f"expected reuse {restart_request.expected_reuse}"
    )
    if "ours" in restarts:
        print(f"  ours: first turn after restart / median warm follow-up turn = {restarts['ours'][0] / warm:.2f}")
    print(
        f"\ntargets: ours/floor on follow-ups worst {worst_ratio:.2f} (<= 1.10); "
        + "".join(f"slower than {peer} on: {', '.join(labels) or 'none'}; " for peer, labels in slower.items())
        + f"cached_tokens mismatches: {mismatches}"
    )
    for note in notes:
        print("note:", note)
    plot(plot_rows, restarts, restart_request.floor_s, args.out)


def plot(
    rows: list[tuple[str, float, dict[str, float]]],
    restarts: dict[str, tuple[float, int | None, float]],
    restart_floor: float,
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(12, 5))
    labels = [label for label, _, _ in rows] + ["after kill"]
    xs = list(range(len(labels)))
    ax.plot(xs[:-1], [f for _, f, _ in rows], "k--", marker="o", label="floor (mlx-lm, kept cache)")
    for name in rows[0][2]:
        ax.plot(xs[:-1], [m[name] for _, _, m in rows], marker="o", label=name)
        if name in restarts:
            ax.scatter([xs[-1]], [restarts[name][0]], marker="X", s=80)
    ax.scatter([xs[-1]], [restart_floor], marker="x", color="k")
    ax.set_yscale("log")
    ax.set_xticks(xs, labels, rotation=60, ha="right")
    ax.set_ylabel("time to first token (s, log)")
    ax.set_title("Claude-Code-shaped session on SmolLM2-135M (CPU): TTFT per request")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


if __name__ == "__main__":
    sys.exit(main())
