"""Supervisor figures: READY detection lag, crash -> respawn, bounded stop, CLI start-up, idle CPU.

    python bench/supervisor.py [--starts 20] [--idle 60]

Uses the fault-injecting test backend (tests/fault_backend.py) as the supervised process and prints
a table. Not a test: numbers depend on the machine.
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


def serve_fault(home_dir: str, *flags: str, **entry: object) -> subprocess.Popen[bytes]:
    """`anyclaude serve` on the fault backend; returns once its state file says READY."""
    tmp = Path(tempfile.mkdtemp())
    command = [sys.executable, "-m", "tests.fault_backend", "--port", "{port}", *flags]
    backend = {"command": command, "port": free_port(), **entry}
    (tmp / "c.json").write_text(json.dumps({"port": free_port(), "backends": {"b": backend}, "backend": "b"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "serve", "--config", str(tmp / "c.json")],
        cwd=ROOT,
        env={**os.environ, "ANYCLAUDE_HOME": home_dir},
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


async def main_async(args: argparse.Namespace) -> None:
    home_dir = tempfile.mkdtemp()
    home = Home(Path(home_dir)).ensure()
    os.chdir(ROOT)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--idle", type=float, default=60.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
