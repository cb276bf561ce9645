"""`anyclaude logs`: the last lines of a log, optionally followed across rotations."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path

from launcher.errors import NotRunningError
from launcher.paths import Home
from launcher.supervision import statefile

FOLLOW_POLL = 0.25


def pick_log(home: Home, name: str | None) -> Path:
    """The log of `name`; without a name, the only running backend's, else the launcher's own."""
    if name is None:
        records = statefile.list_records(home)
        name = records[0].name if len(records) == 1 else "anyclaude"
    path = home.logs / f"{name}.log"
    if not path.exists():
        known = sorted(p.stem for p in home.logs.glob("*.log")) if home.logs.is_dir() else []
        raise NotRunningError(
            f"There is no log for '{name}' in {home.logs}.",
            hint=f"Known logs: {', '.join(known)}." if known else "Start a backend first: anyclaude serve --mode NAME",
        )
    return path


def tail_lines(path: Path, count: int) -> list[str]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return list(deque(fh, maxlen=count)) if count > 0 else []


def show_log(path: Path, count: int, follow: bool) -> None:
    sys.stdout.writelines(tail_lines(path, count))
    sys.stdout.flush()
    if follow:
        _follow(path)


def _follow(path: Path) -> None:
    """Print lines as they are appended; reopen the file when it is rotated (its inode changes)."""
    fh = path.open("r", encoding="utf-8", errors="replace")
    fh.seek(0, os.SEEK_END)
    inode = os.fstat(fh.fileno()).st_ino
    try:
        while True:
            line = fh.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
                continue
            time.sleep(FOLLOW_POLL)
            try:
                if os.stat(path).st_ino != inode:
                    fh.close()
                    fh = path.open("r", encoding="utf-8", errors="replace")
                    inode = os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                continue
    finally:
        fh.close()
