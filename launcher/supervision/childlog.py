"""Backend output → a rotating log file, pumped by a thread so the backend never waits on us.

The pump reads the child's stdout+stderr pipe in large chunks and hands them to a
`RotatingFileHandler`; invalid UTF-8 becomes U+FFFD instead of an exception; known secrets are
masked. It also keeps the last lines in memory for progress displays and start-failure reports.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import logging.handlers
import os
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launcher.diskfull import TROUBLE
from launcher.paths import FILE_MODE
from launcher.redact import redact_argv, redact_text

CHUNK = 65536
# What could not be written for a full disk is kept, the newest this many characters, and written (after a
# line saying so) once there is room: the next write, or the disk retry within a second of space returning.
KEEP_UNWRITTEN = 64 * 1024


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are 0600 (logs may quote prompts) and whose size limit holds.

    The standard handler measures records in characters, so multibyte output (U+FFFD from invalid
    UTF-8 is 3 bytes) overshoots the limit, and with no backups it never rotates at all.
    A write that fails (a full disk) is reported once to `diskfull.TROUBLE` as `what`, instead of the
    standard handler's traceback on stderr for every record (the terminal Claude Code draws on); what it
    could not write is kept (see KEEP_UNWRITTEN) and written, in order, once there is room.
    """

    def __init__(self, *args: Any, what: str = "a log", **kwargs: Any) -> None:
        self.what = what
        self._troubled = False
        self._failed = False
        self._unwritten: deque[str] = deque()
        self._unwritten_chars = 0
        self._lost_chars = 0
        self._unwritten_since = ""
        super().__init__(*args, **kwargs)

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        # A file from an older, laxer version is tightened too; never a device (a log linked to
        # /dev/null must not make that device private to us).
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, FILE_MODE)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        with self._held():  # BackendLog calls emit directly; the disk retry thread writes what was kept
            self._failed = False
            if self._unwritten:
                try:
                    self.write_unwritten()
                except OSError as exc:  # still no room: this one waits behind the others, in order
                    self._keep(self.format(record) + self.terminator)
                    TROUBLE.failed(self.what, self.baseFilename, exc, self.write_unwritten)
                    return
            super().emit(record)
            if self._troubled and not self._failed:
                self._troubled = False
                TROUBLE.ok(self.what)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._failed = self._troubled = True
        self._drop_stream()
        self._keep(self.format(record) + self.terminator)
        TROUBLE.failed(self.what, self.baseFilename, exc, self.write_unwritten)

    def write_unwritten(self) -> None:
        """Write what a full disk kept out, after a line saying so. Raises OSError while there is no room."""
        with self._held():
            if not self._unwritten:
                return
            lost = f", {self._lost_chars} characters before them were lost" if self._lost_chars else ""
            note = (
                f"===== {time.strftime('%H:%M:%S')} the disk was full from {self._unwritten_since}: "
                f"the lines below were written late{lost}\n"
            )
            try:
                if self.stream is None:
                    self.stream = self._open()
                self.stream.write(note + "".join(self._unwritten))
                self.stream.flush()
            except OSError:
                self._drop_stream()
                raise
            self._unwritten.clear()
            self._unwritten_chars = self._lost_chars = 0

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        self.acquire()  # an RLock: emit holds it already when called through handle()
        try:
            yield
        finally:
            self.release()

    def _keep(self, text: str) -> None:
        if not self._unwritten:
            self._unwritten_since = time.strftime("%H:%M:%S")
        self._unwritten.append(text)
        self._unwritten_chars += len(text)
        while self._unwritten_chars > KEEP_UNWRITTEN and len(self._unwritten) > 1:
            dropped = self._unwritten.popleft()
            self._unwritten_chars -= len(dropped)
            self._lost_chars += len(dropped)

    def _drop_stream(self) -> None:
        """Close the file after a failed write: what it still buffers is kept apart, never written twice."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:  # data still buffered for a full disk must not break a stop
            TROUBLE.failed(self.what, self.baseFilename, exc)

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:
            TROUBLE.failed(self.what, self.baseFilename, exc)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        size = len((self.format(record) + self.terminator).encode("utf-8", "replace"))
        return self.stream.tell() > 0 and self.stream.tell() + size > self.maxBytes

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
            return
        # No backups wanted: start the one file afresh instead of letting it grow forever.
        if self.stream:
            self.stream.close()
        os.truncate(self.baseFilename, 0)
        self.stream = self._open()


class BackendLog:
    """The log of one backend: `logs/<name>.log` plus rotated copies `.1` … `.N`."""

    def __init__(self, path: Path, max_bytes: int, backups: int, secrets: tuple[str, ...] = ()) -> None:
        self.path = path
        self.secrets = secrets
        # A record never spans files; keeping pieces well under max_bytes keeps each file near its size.
        self.piece = max(256, max_bytes // 8)
        self.handler = PrivateRotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", what=f"the log of {path.stem}"
        )
        self.handler.terminator = ""
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.tail: deque[str] = deque(maxlen=200)
        self._partial = ""
        self._held = ""
        self._hold = max((len(s) for s in secrets), default=1) - 1

    def banner(self, pid: int, argv: tuple[str, ...]) -> None:
        self.flush_held()
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join(redact_argv(argv, self.secrets))
        self.write_text(f"\n===== {when} started pid {pid}: {command}\n")

    def note(self, text: str) -> None:
        """A line from the launcher itself (exit codes, signals), marked so it stands out."""
        self.flush_held()
        self.write_text(f"===== {time.strftime('%H:%M:%S')} {text}\n")

    def write_text(self, text: str, final: bool = True) -> None:
        """Append `text` with secrets masked. With `final=False` (a pipe chunk), the tail that could be
        the start of a secret split across two reads is held back until the next chunk."""
        text = redact_text(self._held + text, self.secrets)
        self._held = ""
        if not final and self._hold > 0:
            text, self._held = text[: -self._hold], text[-self._hold :]
        self._emit(text)

    def flush_held(self) -> None:
        if self._held:
            held, self._held = self._held, ""
            self._emit(held)

    def _emit(self, text: str) -> None:
        if not text:
            return
        for start in range(0, len(text), self.piece):
            piece = text[start : start + self.piece]
            self.handler.emit(logging.LogRecord("backend", logging.INFO, "", 0, piece, None, None))
        self._remember(text)

    def last_lines(self, n: int = 20) -> list[str]:
        lines = list(self.tail)
        if self._partial.strip():
            lines.append(self._partial)
        return lines[-n:]

    def last_line(self) -> str:
        lines = self.last_lines(1)
        return lines[0] if lines else ""

    def close(self) -> None:
        self.flush_held()
        self.handler.close()

    def _remember(self, text: str) -> None:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()[-2000:]
        self.tail.extend(p.rstrip("\r")[-500:] for p in parts if p.strip() and not p.startswith("====="))


class Pump(threading.Thread):
    """Copies a pipe into a BackendLog until EOF or until stopped.

    It polls with a timeout instead of blocking in read(): a grandchild that inherited the pipe
    and outlives the backend would otherwise keep the thread (and `stop`) waiting forever.
    """

    def __init__(self, fd: int, log: BackendLog) -> None:
        super().__init__(name=f"pump-{log.path.stem}", daemon=True)
        self.fd = fd
        self.log = log
        self._stop_flag = threading.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def run(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    if self._stop_flag.is_set():
                        return
                    continue
                chunk = os.read(self.fd, CHUNK)
                if not chunk:
                    return
                self.log.write_text(self._decoder.decode(chunk), final=False)
        except (OSError, ValueError):
            return
        finally:
            self.log.write_text(self._decoder.decode(b"", final=True))
            os.close(self.fd)

    def stop(self, timeout: float = 1.0) -> None:
        """Drain what is readable, then return within about `timeout` even if the pipe stays open."""
        self._stop_flag.set()
        self.join(timeout)
