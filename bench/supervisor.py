"""Supervisor figures: READY detection lag, crash -> respawn, bounded stop, CLI start-up, idle CPU, and
recovery at the default timings: a hung backend -> serving again, a failing config change -> rolled back.

    python bench/supervisor.py [--starts 20] [--idle 60] [--recovery-runs 1] [--checkout PATH] [--only-recovery]

Uses the fault-injecting test backend (tests/fault_backend.py) as the supervised process and prints
a table. `--checkout PATH` runs the recovery rows with another checkout's `anyclaude` (e.g. a worktree
of an older commit) for a before/after comparison. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.base import ApiKind, LaunchSpec, Probe  # noqa: E402
from launcher.paths import Home  # noqa: E402
from launcher.supervision.backoff import Backoff  # noqa: E402
from launcher.supervision.ports import free_port  # noqa: E402
from launcher.supervision.states import ProcessState  # noqa: E402

S = ProcessState
from launcher.supervision.supervisor import Supervisor, Timings  # noqa: E402


def marks(path: Path, kind: str) -> list[float]:
    if not path.exists():
        return []
    return [float(line.split()[2]) for line in path.read_text().splitlines() if line.startswith(kind + " ")]


def spec(port: int, marker: Path, *flags: str) -> LaunchSpec:
    argv = (sys.executable, "-m", "tests.fault_backend", "--port", str(port), "--marker", str(marker), *flags)
    probe = Probe(f"http://127.0.0.1:{port}/health")
    return LaunchSpec("bench", "command", argv, f"http://127.0.0.1:{port}/v1", ApiKind.OPENAI, probe, probe, port=port)


async def ready_lag(home: Home, starts: int) -> list[float]:
    """Seconds from the backend's first 200 to the supervisor's READY, over `starts` fresh starts."""
    lags = []
    for i in range(starts):
        marker = Path(home.root) / f"lag{i}.marks"
        sup = Supervisor(spec(free_port(), marker, "--ready-after", "0.3"), home, timings=Timings(health_interval=60))
        ready_at: list[float] = []
        sup.add_listener(
            lambda old, new, why, out=ready_at: out.append(time.time()) if new is ProcessState.READY else None
        )
        task = asyncio.create_task(sup.run())
        await sup.wait_for({ProcessState.READY}, timeout=30)
        answered = marks(marker, "ANSWERED")
        lags.append(ready_at[0] - answered[0])
        sup.request_stop()
        await task
    return lags


async def respawn(home: Home, rounds: int = 5) -> tuple[list[float], list[float]]:
    """Seconds from SIGKILL of the backend to the next process start, and to READY again."""
    marker = Path(home.root) / "respawn.marks"
    backoff = Backoff(initial=0.0, cap=0.0, jitter=0.0, max_restarts=100)
    sup = Supervisor(spec(free_port(), marker), home, timings=Timings(health_interval=60), backoff=backoff)
    task = asyncio.create_task(sup.run())
    to_start, to_ready = [], []
    for _ in range(rounds):
        await sup.wait_for({ProcessState.READY}, timeout=30)
        before = len(marks(marker, "START"))
        killed = time.time()
        os.kill(sup.pid or 0, signal.SIGKILL)
        await sup.wait_for({ProcessState.BACKOFF, ProcessState.STARTING}, timeout=30)
        await sup.wait_for({ProcessState.READY}, timeout=30)
        ready = time.time()
        starts = marks(marker, "START")
        assert len(starts) == before + 1
        to_start.append(starts[-1] - killed)
        to_ready.append(ready - killed)
    sup.request_stop()
    await task
    return to_start, to_ready


def serve_fault(home_dir: str, *flags: str, root: Path = ROOT, **entry: object) -> subprocess.Popen[bytes]:
    """`anyclaude serve` (from checkout `root`) on the fault backend; returns once its state file says READY."""
    tmp = Path(tempfile.mkdtemp())
    command = [sys.executable, "-m", "tests.fault_backend", "--port", "{port}", *flags]
    backend = {"command": command, "port": free_port(), **entry}
    (tmp / "c.json").write_text(json.dumps({"port": free_port(), "backends": {"b": backend}, "backend": "b"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "serve", "--config", str(tmp / "c.json")],
        cwd=root,
        env={**os.environ, "ANYCLAUDE_HOME": home_dir, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = Path(home_dir) / "run" / "b.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if record.exists() and json.loads(record.read_text() or "{}").get("state") == "READY":
            break
        time.sleep(0.02)
    return proc


def stop_time(home_dir: str, stop_timeout_ms: int = 2000) -> float:
    """Wall time of Ctrl-C -> `anyclaude serve` exited, for a backend that ignores SIGTERM."""
    proc = serve_fault(home_dir, "--ignore-sigterm", "--grandchild", stopTimeout=stop_timeout_ms)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    return time.monotonic() - started


def _wait_for(predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"not seen within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # a second Ctrl-C: at once
        proc.wait(30)


def hang_to_serving(root: Path, hang_after: float = 3.0) -> float:
    """Seconds from a backend hanging (stops answering, ignores SIGTERM) to its replacement answering,
    at the default healthInterval, healthTimeout, healthFailures and stopTimeout."""
    marker = Path(tempfile.mkdtemp()) / "hang.marks"
    flags = ("--hang-after", str(hang_after), "--ignore-sigterm", "--marker", str(marker))
    proc = serve_fault(tempfile.mkdtemp(), *flags, root=root)
    try:
        _wait_for(lambda: len(marks(marker, "START")) >= 2 and len(marks(marker, "ANSWERED")) >= 2, 120)
        hung = marks(marker, "START")[0] + hang_after
        return marks(marker, "ANSWERED")[1] - hung
    finally:
        _stop(proc)


def change_to_rollback(root: Path) -> float:
    """Seconds from a config edit whose backend needs the old one's port and cannot start, to the old
    backend answering again, at the default restart backoff."""
    home, tmp = tempfile.mkdtemp(), Path(tempfile.mkdtemp())
    marker = tmp / "rollback.marks"
    good = [sys.executable, "-m", "tests.fault_backend", "--port", "{port}", "--marker", str(marker)]
    entry = {"command": good, "port": free_port()}
    config = {"port": free_port(), "backend": "b", "backends": {"b": entry}}
    path = tmp / "c.json"
    path.write_text(json.dumps(config))
    output = tmp / "serve.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "serve", "--config", str(path)],
            cwd=root,
            env={**os.environ, "ANYCLAUDE_HOME": home, "PYTHONPATH": str(root)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # The endpoint lines are printed once the config watcher runs.
        _wait_for(lambda: "Serving the Anthropic API" in output.read_text(errors="replace"), 60)
        broken = {**entry, "command": [*good[:5], "--no-listen", "--exit-after", "0.2"]}
        edited = time.time()
        path.write_text(json.dumps({**config, "backends": {"b": broken}}))
        _wait_for(lambda: len(marks(marker, "ANSWERED")) >= 2, 120)
        return float(marks(marker, "ANSWERED")[1] - edited)
    finally:
        _stop(proc)


def help_time(runs: int = 10) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "launcher", "--help"], capture_output=True, check=True, cwd=ROOT)
        times.append(time.monotonic() - started)
    return times


def idle_cpu(home_dir: str, seconds: float) -> float:
    """CPU use (% of one core) of `anyclaude serve` itself while its backend idles."""
    proc = serve_fault(home_dir)
    try:
        time.sleep(2)  # let start-up work settle
        me = psutil.Process(proc.pid)
        before = sum(me.cpu_times()[:2])
        time.sleep(seconds)
        after = sum(me.cpu_times()[:2])
        return 100 * (after - before) / seconds
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def row(name: str, values: list[float], unit: str = "ms", scale: float = 1000) -> str:
    med = statistics.median(values) * scale
    return f"| {name} | {med:.1f} {unit} | {min(values) * scale:.1f} | {max(values) * scale:.1f} | {len(values)} |"


def recovery_rows(args: argparse.Namespace) -> None:
    root = Path(args.checkout).resolve() if args.checkout else ROOT
    hangs = [hang_to_serving(root) for _ in range(args.recovery_runs)]
    rollbacks = [change_to_rollback(root) for _ in range(args.recovery_runs)]
    which = f" ({root.name})" if args.checkout else ""
    print(row(f"hung backend -> serving again, default timings{which}", hangs, "s", 1))
    print(row(f"failing in-place config change -> old backend answering again{which}", rollbacks, "s", 1))


async def main_async(args: argparse.Namespace) -> None:
    home_dir = tempfile.mkdtemp()
    home = Home(Path(home_dir)).ensure()
    os.chdir(ROOT)
    if args.only_recovery:
        print("| measure | median | min | max | n |")
        print("|---|---|---|---|---|")
        recovery_rows(args)
        return
    lags = await ready_lag(home, args.starts)
    to_start, to_ready = await respawn(home)
    stops = [stop_time(tempfile.mkdtemp()) for _ in range(3)]
    helps = help_time()
    cpu = idle_cpu(tempfile.mkdtemp(), args.idle)
    print("| measure | median | min | max | n |")
    print("|---|---|---|---|---|")
    print(row("READY detection lag (backend's first 200 -> READY)", lags))
    print(row("crash (SIGKILL) -> new process started", to_start))
    print(row("crash (SIGKILL) -> READY again", to_ready))
    print(row("stop, SIGTERM-ignoring backend + grandchild, stopTimeout 2 s", stops, "s", 1))
    print(row("`anyclaude --help` wall time", helps))
    print(f"| idle CPU of `anyclaude serve` over {args.idle:.0f} s | {cpu:.2f} % of a core | | | 1 |")
    recovery_rows(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--recovery-runs", type=int, default=1, help="runs of each recovery row")
    parser.add_argument("--checkout", help="run the recovery rows with the anyclaude of this checkout")
    parser.add_argument("--only-recovery", action="store_true", help="print only the recovery rows")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
