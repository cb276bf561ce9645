"""State files: `$ANYCLAUDE_HOME/run/<backend>.json`, one per supervised backend.

They let `status`, `stop` and `restart` work from another terminal, and let the next run find a
backend orphaned by a launcher that was killed. Ownership is proved by pid + process create
time + a hash of the command line: the kernel never gives the same pid and start time to two
processes, so a state file pointing at a pid that now belongs to an unrelated process never leads
to signalling it; and a forged or copied file naming a live process's pid and create time still
fails on the command line anyone else's process runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from launcher.paths import Home, write_private

# psutil reports create time rounded by the platform; 10 ms is far below any pid reuse interval.
CREATE_TIME_TOLERANCE = 0.01


@dataclass
class BackendRecord:
    name: str
    kind: str
    state: str
    reason: str = ""
    pid: int | None = None
    create_time: float | None = None
    port: int | None = None
    argv_hash: str | None = None
    watchdog: bool = False  # `pid` is the watchdog in front of the backend (procs.watchdog_argv)
    # The watchdog's descendants as last seen, [pid, create time] each: what is stopped if it dies alone.
    tree: list[list[float]] = field(default_factory=list)
    base_url: str | None = None
    launcher_pid: int = field(default_factory=os.getpid)
    launcher_create_time: float | None = None
    launcher_argv_hash: str | None = None
    config_path: str | None = None
    # Whether the model can call tools, as the launcher found at start: {"can_call": bool | None, "why": str}.
    tools: dict[str, Any] = field(default_factory=dict)
    proxy_url: str | None = None
    log_path: str | None = None
    restarts: int = 0
    started_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    breaker: dict[str, Any] = field(default_factory=dict)
    # The launcher's latest config edits, newest last: {"at": epoch seconds, "applied": bool, "message": str}.
    config_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def proxy_port(self) -> int | None:
        """The port of the proxy in front of this backend, if one runs."""
        if not self.proxy_url:
            return None
        tail = self.proxy_url.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def argv_hash(argv: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]


def record_path(home: Home, name: str) -> Path:
    return home.run / f"{name}.json"


def write_record(home: Home, record: BackendRecord) -> None:
    record.updated_at = time.time()
    write_private(record_path(home, record.name), record.to_json())


def read_record(home: Home, name: str) -> BackendRecord | None:
    """The record for `name`, or None when there is none or it cannot be read (a torn file is ignored)."""
    try:
        data = json.loads(record_path(home, name).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return None
        record = BackendRecord(**{k: v for k, v in data.items() if k in BackendRecord.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None
    # A hand-edited or foreign file must never turn into a signal to some arbitrary pid.
    for pid in (record.pid, record.launcher_pid):
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
            return None
    return record


def list_records(home: Home) -> list[BackendRecord]:
    if not home.run.is_dir():
        return []
    records = (read_record(home, p.stem) for p in sorted(home.run.glob("*.json")))
    return [r for r in records if r is not None]


def remove_record(home: Home, name: str) -> None:
    record_path(home, name).unlink(missing_ok=True)


def process_create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_argv_hash(pid: int) -> str | None:
    """The hash of a live process's command line (what `argv_hash` recorded when we started it)."""
    try:
        return argv_hash(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def proven_process(pid: int | None, create_time: float | None, command_hash: str | None) -> psutil.Process | None:
    """The live process with this pid, this create time *and* this command line, else None.

    None when it is dead, the pid was reused, or the record does not say which command ran (a file from
    an older version, or one written by hand): a process that cannot be proven ours is never signalled.
    """
    if pid is None or create_time is None or not isinstance(command_hash, str):
        return None
    if not isinstance(pid, int) or pid <= 0 or not isinstance(create_time, int | float):
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if argv_hash(proc.cmdline()) != command_hash:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def launcher_alive(record: BackendRecord) -> psutil.Process | None:
    return proven_process(record.launcher_pid, record.launcher_create_time, record.launcher_argv_hash)


def backend_alive(record: BackendRecord) -> psutil.Process | None:
    return proven_process(record.pid, record.create_time, record.argv_hash)
