"""`status`, `stop` and `restart` from another terminal, through the state files.

A running launcher is asked by signal (SIGTERM to stop, SIGUSR1 to restart), and only once its
pid and create time match the state file. A backend whose launcher is gone (killed with
SIGKILL) is stopped directly, again only after the same proof.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import AnyclaudeError, NotRunningError
from launcher.paths import Home
from launcher.supervision import statefile
from launcher.supervision.clock import MonotonicClock
from launcher.supervision.procs import terminate_group
from launcher.supervision.statefile import BackendRecord

POLL = 0.1


@dataclass(frozen=True)
class Liveness:
    record: BackendRecord
    launcher: bool
    backend: bool

    @property
    def state(self) -> str:
        if self.launcher:
            return self.record.state
        return "ORPHANED" if self.backend else "STALE"


def survey(home: Home) -> list[Liveness]:
    return [
        Liveness(r, statefile.launcher_alive(r) is not None, statefile.backend_alive(r) is not None)
        for r in statefile.list_records(home)
    ]


def _select(home: Home, name: str | None) -> list[Liveness]:
    found = [entry for entry in survey(home) if name is None or entry.record.name == name]
    if name is not None and not found:
        raise NotRunningError(f"No backend named '{name}' is running.", hint="`anyclaude status` lists what runs.")
    return found


def stop(home: Home, name: str | None = None, timeout: float = 30.0) -> list[str]:
    """Stop the named backend (or all): ask its launcher, or stop an orphan ourselves. Returns what was done."""
    done: list[str] = []
    for entry in _select(home, name):
        record = entry.record
        launcher = statefile.launcher_alive(record)
        if launcher is not None:
            launcher.send_signal(signal.SIGTERM)
            if not _wait(lambda r=record: statefile.launcher_alive(r) is None, timeout):  # type: ignore[misc]
                raise AnyclaudeError(
                    f"anyclaude pid {record.launcher_pid} is still stopping after {timeout:.0f} s: it lets the"
                    " requests running on it finish first (up to its drainTimeout).",
                    hint=f"Run `anyclaude stop {record.name}` again to stop it at once (a second signal cuts them).",
                )
            done.append(f"stopped {record.name} (anyclaude pid {record.launcher_pid})")
        elif entry.backend and record.pid is not None:
            asyncio.run(terminate_group(record.pid, 10.0, MonotonicClock(), watchdog=record.watchdog))
            done.append(f"stopped orphaned {record.name} (pid {record.pid})")
        else:
            done.append(f"removed stale state of {record.name} (nothing was running)")
        statefile.remove_record(home, record.name)
    return done


def restart(home: Home, name: str | None = None, timeout: float = 120.0) -> list[str]:
    """Ask the running launcher(s) to restart their backend now (this also clears FATAL)."""
    done: list[str] = []
    for entry in _select(home, name):
        record = entry.record
        launcher = statefile.launcher_alive(record)
        if launcher is None:
            raise NotRunningError(
                f"Backend '{record.name}' has no running anyclaude to restart it.",
                hint=f"Start it with: anyclaude serve --mode {record.name}",
            )
        before = record.started_at
        launcher.send_signal(signal.SIGUSR1)

        def restarted(before: float | None = before, name: str = record.name) -> bool:
            now = statefile.read_record(home, name)
            return now is not None and now.started_at != before and now.state in ("READY", "DEGRADED", "FATAL")

        ok = _wait(restarted, timeout)
        latest = statefile.read_record(home, record.name)
        state = latest.state if latest else "unknown"
        done.append(f"restarted {record.name}: {state}" if ok else f"{record.name} still {state} after {timeout:.0f} s")
    return done


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL)
    return bool(predicate())


def proxied(home: Home, mode: str) -> Liveness | None:
    """The live anyclaude whose proxy fronts backend `mode`, in whatever state the backend is."""
    return next((e for e in survey(home) if e.launcher and e.record.name == mode and e.record.proxy_url), None)


def find_proxy(home: Home, mode: str, config_path: Path | None) -> str | None:
    """The proxy URL of a live anyclaude already serving `mode` from the same config file, if any."""
    entry = proxied(home, mode)
    if entry is None or entry.record.state not in ("READY", "DEGRADED"):
        return None
    return entry.record.proxy_url if entry.record.config_path == (str(config_path) if config_path else None) else None
