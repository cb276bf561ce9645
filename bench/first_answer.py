"""The whole first answer through the real Claude Code on the built-in default: cold, then warm.

    python bench/first_answer.py [--runs 2] [--timeout 1800] [--home DIR] [--prompt TEXT]

Runs `anyclaude -- -p PROMPT --output-format json` the way a newcomer does, in a fresh HOME (so a fresh
`~/.anyclaude`: the model is fetched from PyPI and converted, the server starts, Claude Code's first request
is prefilled and answered), then again in the same HOME (warm: model on disk, prompt cache saved). Each run's
time is split with what anyclaude already records: the timestamps of its own progress lines, the request
log (`~/.anyclaude/requests.db`) and the MLX server's per-request log line (prompt, cached and prefilled
tokens, time to the first token, finish reason).

Not a test: the figures are wall-clock seconds on this machine. On a shared box they move with everyone
else's load; rerun it on a quiet one for the figures to quote. `--home DIR` keeps the HOME for a look
afterwards (logs, request log); without it a temporary one is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.defaults import DEFAULT_BACKEND_PORT, DEFAULT_MODE  # noqa: E402
from launcher.supervision.ports import free_port, port_holder  # noqa: E402

PROMPT = "What is the capital of France?"
# Variables that would point the run at another config, home or endpoint than a newcomer's.
_FOREIGN = ("ANYCLAUDE_", "ANTHROPIC_", "CLAUDE_", "API_TIMEOUT_MS", "DISABLE_")
_SERVER_LINE = re.compile(
    r"prompt_tokens=(?P<prompt>\d+) cached_tokens=(?P<cached>\d+) prefilled_tokens=(?P<prefilled>\d+) "
    r"generated_tokens=(?P<generated>\d+) ttft=(?P<ttft>[\d.]+)s tokens_per_s=(?P<tps>[\d.]+) "
    r"queue_wait=[\d.]+s finish=(?P<finish>\w+)"
)


@dataclass
class Run:
    """One `anyclaude` run: when each of its stderr lines came, what it printed, what it logged."""

    label: str
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    ended: float = 0.0
    code: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: list[dict[str, str]] = field(default_factory=list)

    def at(self, pattern: str) -> float | None:
        """Seconds from the start to the first stderr line matching `pattern`; None when none did."""
        return next((t - self.started for t, text in self.lines if re.search(pattern, text)), None)


def newcomer_env(home: Path, proxy_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    # A free proxy port, so a shared box's other anyclaude does not answer for this one.
    return {**env, "HOME": str(home), "ANYCLAUDE_PORT": str(proxy_port), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


def run_once(label: str, home: Path, prompt: str, timeout: float) -> Run:
    project = home / "project"  # no .anyclauderc.json here or in HOME: the built-in default
    project.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "launcher", "--", "-p", prompt, "--output-format", "json"]
    run = Run(label, time.time())
    proc = subprocess.Popen(
        argv,
        cwd=project,
        env=newcomer_env(home, free_port()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None

    out_parts: list[str] = []

    def read_stderr() -> None:
        for text in proc.stderr:  # type: ignore[union-attr]
            run.lines.append((time.time(), text.rstrip()))

    # One reader per pipe (communicate() would take stderr lines from under the timed reader).
    readers = [
        threading.Thread(target=read_stderr, daemon=True),
        threading.Thread(target=lambda: out_parts.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=60)
        run.lines.append((time.time(), f"bench: stopped after {timeout:.0f} s"))
    run.ended, run.code = time.time(), proc.returncode
    for reader in readers:
        reader.join(5)
    out = "".join(out_parts)
    try:
        run.answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        run.answer = {"result": out.strip()[-300:]}
    run.requests = request_log(home / ".anyclaude" / "requests.db", run.started)
    run.server = server_lines(home / ".anyclaude" / "logs" / f"{DEFAULT_MODE}.log", len(run.requests))
    return run


def request_log(path: Path, since: float) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM requests WHERE started >= ? ORDER BY started", (since,)).fetchall()
    return [dict(r) for r in rows]


def server_lines(path: Path, last: int) -> list[dict[str, str]]:
    """The MLX server's per-request lines of this run (the log's last `last`)."""
    if not path.is_file() or last == 0:
        return []
    found = [m.groupdict() for m in map(_SERVER_LINE.search, path.read_text(errors="replace").splitlines()) if m]
    return found[-last:]


def phases(run: Run) -> list[tuple[str, float | None]]:
    """(what, seconds from the start) for each step a person waits through, in order."""
    messages = [r for r in run.requests if r["endpoint"] == "messages"]
    answer = messages[-1] if messages else None
    since = lambda wall: None if wall is None else wall - run.started  # noqa: E731
    first_token = answer["started"] + answer["ttft"] if answer and answer["ttft"] is not None else None
    last_token = answer["started"] + answer["duration"] if answer and answer["duration"] is not None else None
    return [
        ("model fetched + converted", run.at(r"✓ .* is ready in ")),
        ("backend ready", run.at(r"✓ .* is ready \(")),
        ("Claude Code's first request at the proxy", since(messages[0]["started"]) if messages else None),
        ("answer: request at the proxy", since(answer["started"]) if answer else None),
        ("answer: first token (prefill done)", since(first_token)),
        ("answer: last token", since(last_token)),
        ("anyclaude exited", run.ended - run.started),
    ]


def print_run(run: Run, show_output: bool) -> None:
    print(f"\n== {run.label}: exit {run.code}, {run.ended - run.started:.1f} s")
    if show_output:
        for t, text in run.lines:
            print(f"  | {t - run.started:7.1f} {text[:150]}")
    previous = 0.0
    print(f"  {'step':44} {'at s':>8} {'took s':>8}")
    for what, at in phases(run):
        if at is None:
            print(f"  {what:44} {'-':>8} {'-':>8}")
            continue
        print(f"  {what:44} {at:8.1f} {at - previous:8.1f}")
        previous = at
    print(f"  requests through the proxy: {len(run.requests)}")
    print(f"  {'#':>3} {'at s':>7} {'input':>6} {'cached':>6} {'output':>6} {'ttft s':>7} {'dur s':>7}  stop")
    for i, r in enumerate(run.requests, 1):
        cells = [r["input_tokens"], r["cached_tokens"], r["output_tokens"]]
        nums = " ".join(f"{'-' if c is None else c:>6}" for c in cells)
        ttft = "-" if r["ttft"] is None else f"{r['ttft']:.1f}"
        duration = "-" if r["duration"] is None else f"{r['duration']:.1f}"
        stop = r["stop_reason"] or r["error_type"] or r["status"]
        print(f"  {i:>3} {r['started'] - run.started:7.1f} {nums} {ttft:>7} {duration:>7}  {stop}")
    for s in run.server:
        rate = int(s["prefilled"]) / float(s["ttft"]) if float(s["ttft"]) > 0 else 0.0
        print(
            f"  server: {s['prompt']} prompt tokens, {s['cached']} cached, {s['prefilled']} prefilled in "
            f"{s['ttft']} s ({rate:.0f} tok/s), {s['generated']} generated at {s['tps']} tok/s, {s['finish']}"
        )
    result = str(run.answer.get("result", ""))
    print(f"  answer (is_error={run.answer.get('is_error')}): {result[:200]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="the first is cold, the rest warm (2)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take (1800)")
    parser.add_argument("--home", type=Path, help="HOME to use and keep; an existing one gives warm runs only")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--show-output", action="store_true", help="also print anyclaude's own lines, timed")
    args = parser.parse_args()
    if shutil.which("claude") is None:
        sys.exit("bench: the real Claude Code (`claude`) is not on PATH")
    if port_holder("127.0.0.1", DEFAULT_BACKEND_PORT) is not None:
        sys.exit(f"bench: port {DEFAULT_BACKEND_PORT} (the built-in default's backend) is in use; free it first")
    cold = args.home is None or not args.home.exists()
    home = args.home or Path(tempfile.mkdtemp(prefix="anyclaude-first-answer."))
    home.mkdir(parents=True, exist_ok=True)
    print(f"HOME={home}  cpus={os.cpu_count()}  load={os.getloadavg()[0]:.2f} (a busy box makes every step slower)")
    try:
        for i in range(args.runs):
            label = "cold (fresh HOME)" if i == 0 and cold else f"warm #{i + (0 if cold else 1)}"
            print_run(run_once(label, home, args.prompt, args.timeout), args.show_output)
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
