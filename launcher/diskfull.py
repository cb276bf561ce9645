"""Writes under `$ANYCLAUDE_HOME` that fail (a full disk, a read-only mount): said once, never fatal.

A full disk must not stop the service (docs/reliability.md 26). Every writer that can hit one (the launcher's
log, the backends' logs, state files, config history) reports here instead of raising or printing a
traceback: the first failure of each kind is said once, with what could not be written and how to
free space; the same failure is said again at most every `REPEAT_AFTER` seconds; the first success
afterwards says that writing works again.

Where it is said is up to the runtime (`add_sink`): the terminal under `serve`, the launcher's log
while Claude Code owns the terminal. A sink that itself fails to write (the log, on the full disk)
comes back here and is dropped, never looping.

A writer that can write the same thing again later passes a `retry`: while anything failed, a
background thread calls each retry every `RETRY_EVERY` seconds until it succeeds, so what failed
for lack of space is written soon after space returns, not only at the next change (a state file
written once at start would otherwise leave `status` blind for as long as the backend runs).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("anyclaude.disk")

Sink = Callable[[str], None]
# Writes `what` again; raises OSError while it still cannot.
Retry = Callable[[], object]
# A condition that lasts is said again this often, so a terminal left open shows it is still true.
REPEAT_AFTER = 300.0
# How often a failed write is tried again: `status` sees a state file within this of space returning.
RETRY_EVERY = 1.0


class WriteTrouble:
    """Failed writes, by what was being written ("config history", "the log of mlx", ...)."""

    def __init__(
        self,
        repeat_after: float = REPEAT_AFTER,
        clock: Callable[[], float] = time.monotonic,
        retry_every: float = RETRY_EVERY,
    ) -> None:
        self.repeat_after = repeat_after
        self.retry_every = retry_every
        self._clock = clock
        self._failing: dict[str, float] = {}  # what -> when it was last said
        self._retries: dict[str, tuple[str, Retry]] = {}  # what -> (path, how to write it again)
        self._retrier: threading.Thread | None = None
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

    def failed(self, what: str, path: str | os.PathLike[str], exc: BaseException, retry: Retry | None = None) -> None:
        """`what` could not be written to `path`: say so, unless it was said recently.

        `retry`, when given, replaces any earlier one for `what` and is called from a background
        thread every `retry_every` seconds until it returns without an OSError (or `ok(what)`).
        """
        if retry is not None:
            with self._lock:
                self._retries[what] = (os.fspath(path), retry)
                self._start_retrier()
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
            self._retries.pop(what, None)
            if self._failing.pop(what, None) is None:
                return
        self._say(f"Writing {what} works again.")

    def drop(self, what: str) -> None:
        """`what` need not be written any more (its file was removed): forget it, saying nothing."""
        with self._lock:
            self._retries.pop(what, None)
            self._failing.pop(what, None)

    @property
    def pending(self) -> list[str]:
        """What failed and will be written again."""
        with self._lock:
            return sorted(self._retries)

    def retry_now(self) -> None:
        """Try each pending write once; one that works is said to work again."""
        with self._lock:
            pending = list(self._retries.items())
        for what, (path, retry) in pending:
            try:
                retry()
            except OSError as exc:
                self.failed(what, path, exc)  # said again only after repeat_after
                continue
            except Exception:  # a retry with a bug must not end the thread that retries the others
                log.exception("retrying the write of %s failed", what)
                with self._lock:
                    if self._retries.get(what, (None, None))[1] is retry:
                        del self._retries[what]
                continue
            with self._lock:
                # A newer failure of the same thing replaced this retry meanwhile: that one is still due.
                if self._retries.get(what, (None, None))[1] is not retry:
                    continue
                del self._retries[what]
                said = self._failing.pop(what, None) is not None
            if said:
                self._say(f"Writing {what} works again.")

    def _start_retrier(self) -> None:
        """Start the retry thread unless it runs (called with the lock held)."""
        if self._retrier is not None and self._retrier.is_alive():
            return
        self._retrier = threading.Thread(target=self._retry_loop, name="anyclaude-disk-retry", daemon=True)
        self._retrier.start()

    def _retry_loop(self) -> None:
        while True:
            time.sleep(self.retry_every)
            self.retry_now()
            with self._lock:
                if not self._retries:
                    self._retrier = None
                    return

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
