"""Writes under `$ANYCLAUDE_HOME` that fail (a full disk, a read-only mount): said once, never fatal.

A full disk must not stop the service (docs/reliability.md 26). Every writer that can hit one (the launcher's
log, the backends' logs, state files, config history) reports here instead of raising or printing a
traceback: the first failure of each kind is said once, with what could not be written and how to
free space; the same failure is said again at most every `REPEAT_AFTER` seconds; the first success
afterwards says that writing works again.

Where it is said is up to the runtime (`add_sink`): the terminal under `serve`, the launcher's log
while Claude Code owns the terminal. A sink that itself fails to write (the log, on the full disk)
comes back here and is dropped, never looping.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("anyclaude.disk")

Sink = Callable[[str], None]
# A condition that lasts is said again this often, so a terminal left open shows it is still true.
REPEAT_AFTER = 300.0


class WriteTrouble:
    """Failed writes, by what was being written ("config history", "the log of mlx", ...)."""

    def __init__(self, repeat_after: float = REPEAT_AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        self.repeat_after = repeat_after
        self._clock = clock
        self._failing: dict[str, float] = {}  # what -> when it was last said
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()
        self._saying = threading.local()

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    @property
    def failing(self) -> list[str]:
        """What cannot be written now."""
        with self._lock:
            return sorted(self._failing)

    def failed(self, what: str, path: str | os.PathLike[str], exc: BaseException) -> None:
        """`what` could not be written to `path`: say so, unless it was said recently."""
        if getattr(self._saying, "active", False):
            return  # a sink's own write failed while saying something: never loop
        now = self._clock()
        with self._lock:
            last = self._failing.get(what)
            if last is not None and now - last < self.repeat_after:
                return
            self._failing[what] = now
        self._say(describe(what, path, exc))

    def ok(self, what: str) -> None:
        """`what` was written again after failing: say so once."""
        with self._lock:
            if self._failing.pop(what, None) is None:
                return
        self._say(f"Writing {what} works again.")

    def _say(self, message: str) -> None:
        self._saying.active = True
        try:
            for sink in list(self._sinks):
                try:
                    sink(message)
                except Exception:  # a sink that cannot say it (a closed terminal) must not break a writer
                    continue
        finally:
            self._saying.active = False


def describe(what: str, path: str | os.PathLike[str], exc: BaseException) -> str:
    """What could not be written, why, and how to free space."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    folder = os.path.dirname(os.fspath(path)) or "."
    return (
        f"Cannot write {what} ({os.fspath(path)}): {reason}. anyclaude keeps running without it and writes"
        f" again once there is room. Free space on that disk: `df -h {folder}` shows how full it is,"
        f" `du -sh {os.path.dirname(folder) or folder}/*` what anyclaude keeps there (old logs and caches can go)."
    )


# One per process, like logging's root: every writer in the launcher reports to it.
TROUBLE = WriteTrouble()
