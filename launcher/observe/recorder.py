"""The request log's writer: records are finished on the event loop and written on a thread.

The hot path only fills a `RequestRecord` and puts it on a bounded queue (about a microsecond).
The writer thread reads usage and stop reasons from the kept chunks, feeds the metrics, writes
batches to SQLite and prunes by age and size. A failing disk never reaches the proxy: the failure
is logged once, records are dropped meanwhile, and writing resumes when the disk takes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from launcher.config import DEFAULT_REQUEST_LOG_BYTES, DEFAULT_REQUEST_LOG_DAYS
from launcher.observe import store
from launcher.observe.record import BODY_KEEP_BYTES, RequestRecord

log = logging.getLogger("anyclaude.observe")

SCOPE_KEY = "anyclaude.record"
# Records waiting for the writer; past this (a disk far slower than the requests) new ones are dropped.
QUEUE_LIMIT = 10_000
BATCH_LIMIT = 500
# A batch is written in parts of at most this share of requestLogMaxBytes (estimated), each followed by
# `store.fit`: the log's files never pass the limit by more than one part.
PART_SHARE = 0.02
ROW_ESTIMATE = 300  # bytes a row takes without bodies, index included (bench/request_log_size.py: ~200)
# Retention runs at most this often (seconds), and after this many new rows.
PRUNE_INTERVAL = 60.0
PRUNE_ROWS = 1_000
# After a failed open or write, the writer tries the file again this often (seconds).
RETRY_INTERVAL = 5.0

Sink = Callable[[RequestRecord], None]


@dataclass(frozen=True)
class LogSettings:
    """The request log's config keys, read again for every batch (a config edit applies live)."""

    enabled: bool = True
    max_days: float = DEFAULT_REQUEST_LOG_DAYS
    max_bytes: int = DEFAULT_REQUEST_LOG_BYTES


class _Watched(Response):
    """Sends `inner` and finishes the record once it is sent, the client left, or sending failed."""

    def __init__(self, inner: Response, record: RequestRecord, done: Callable[[RequestRecord], None]) -> None:
        # No Response.__init__: nothing of this object is sent but what `inner` sends.
        self.inner, self.record, self.done = inner, record, done
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.done(self.record)


async def _watch(chunks: Any, record: RequestRecord) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            if isinstance(chunk, bytes):  # a streaming response may also yield str; ours yield bytes
                record.chunk(chunk)
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class Recorder:
    """Implements the proxy's Observer: keeps a record per request and writes it in the background.

    Args:
        path: the SQLite file.
        settings: returns the current LogSettings (called on the writer thread, once per batch).
        keep_bodies: whether prompts and answers are kept now (`logBodies`; called once per request).
        sinks: called on the writer thread with each finished record (the metrics).
    """

    def __init__(
        self,
        path: Path,
        settings: Callable[[], LogSettings],
        keep_bodies: Callable[[], bool] = lambda: False,
        sinks: tuple[Sink, ...] = (),
    ) -> None:
        self.path = path
        self.settings = settings
        self.keep_bodies = keep_bodies
        self.sinks = sinks
        # Counted apart because two threads count: the loop (a full queue) and the writer (a failing disk).
        self.queue_full = 0
        self.unwritten = 0
        self.written = 0
        self._queue: queue.Queue[RequestRecord | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._failing: str | None = None
        self.retry_interval = RETRY_INTERVAL
        self._last_prune = 0.0
        self._since_prune = 0
        self._wal_sized_for: int | None = None

    # ------------------------------------------------------------------ the proxy's calls (event loop)

    def begin(self, request: Request, endpoint: str) -> RequestRecord:
        record = RequestRecord.begin(endpoint, request.scope["headers"])
        record.keep_bodies = self.keep_bodies()
        request.scope[SCOPE_KEY] = record
        return record

    def routed(self, request: Request, backend: str, asked: str, served: str | None, stream: bool) -> None:
        record: RequestRecord | None = request.scope.get(SCOPE_KEY)
        if record is not None:
            record.backend, record.model_asked, record.model_served, record.streamed = backend, asked, served, stream

    def text_tool_calls(self, request: Request, recovered: int, failed: bool) -> None:
        record: RequestRecord | None = request.scope.get(SCOPE_KEY)
        if record is not None:
            record.text_tool_calls, record.tool_parse_failed = recovered, failed

    def end(self, record: RequestRecord | None, request: Request, response: Response) -> Response:
        if record is None:
            return response
        record.status = response.status_code
        raw = getattr(request.state, "raw", None)
        if isinstance(raw, bytes):
            record.request_bytes = len(raw)
            if record.keep_bodies:
                record.request_body = raw[:BODY_KEEP_BYTES]
        record.encoded = response.headers.get("content-encoding")
        if isinstance(response, StreamingResponse):
            record.json_answer = "text/event-stream" not in response.headers.get("content-type", "")
            record.streamed = not record.json_answer
            if record.keep_bodies:
                record.answer = []
            response.body_iterator = _watch(response.body_iterator, record)
        else:
            record.json_answer = True
            record.whole = bytes(response.body)
            if record.keep_bodies:
                record.answer = [record.whole[:BODY_KEEP_BYTES]]
        return _Watched(response, record, self.submit)

    @property
    def dropped(self) -> int:
        """Records the log could not keep (a full queue or a failing disk)."""
        return self.queue_full + self.unwritten

    def submit(self, record: RequestRecord) -> None:
        """Hand a finished record to the writer; never blocks (a full queue drops it and counts)."""
        if record.ended_at is None:
            record.ended_at = time.perf_counter()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.queue_full += 1

    # ------------------------------------------------------------------ live readers (event loop)

    async def wait_for_new(self, timeout: float) -> None:
        """Return when the writer stored new rows, or after `timeout` seconds."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def wake(self) -> None:
        """Wake every live reader now (the proxy is stopping)."""
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    # ------------------------------------------------------------------ the writer thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="anyclaude-request-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread (waits up to `timeout` seconds)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        retry_at = 0.0
        running = True
        while running:
            first = self._queue.get()
            batch: list[RequestRecord] = []
            for item in self._drain(first):
                if item is None:
                    running = False
                else:
                    batch.append(item)
            settings = self.settings()
            self._settle(batch)
            if not settings.enabled or not batch:
                continue
            if conn is None and time.monotonic() >= retry_at:
                conn = self._open()
            if conn is None:
                retry_at = retry_at if retry_at > time.monotonic() else time.monotonic() + self.retry_interval
                self.unwritten += len(batch)
                continue
            try:
                self._write(conn, batch, settings)
                self._since_prune += len(batch)
                self._maybe_prune(conn, settings)
            except sqlite3.Error as exc:
                self.unwritten += len(batch)
                self._failed(f"cannot write the request log {self.path} ({exc})")
                conn.close()
                conn, retry_at = None, time.monotonic() + self.retry_interval
                self._wal_sized_for = None
                continue
            self.written += len(batch)
            self._recovered()
            self._notify()
        if conn is not None:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[RequestRecord], settings: LogSettings) -> None:
        """Insert `batch` in parts, keeping the files within requestLogMaxBytes after each."""
        if self._wal_sized_for != settings.max_bytes:
            store.size_wal(conn, settings.max_bytes)
            self._wal_sized_for = settings.max_bytes
        budget = max(1, int(settings.max_bytes * PART_SHARE))
        part: list[RequestRecord] = []
        size = 0
        for record in batch:
            part.append(record)
            size += _estimate(record)
            if size >= budget:
                self._write_part(conn, part, settings)
                part, size = [], 0
        if part:
            self._write_part(conn, part, settings)

    def _write_part(self, conn: sqlite3.Connection, part: list[RequestRecord], settings: LogSettings) -> None:
        store.insert(conn, part)
        removed = store.fit(conn, self.path, settings.max_bytes)
        if removed:
            log.debug("request log: removed the %d oldest rows (keeping %d bytes)", removed, settings.max_bytes)

    def _drain(self, first: RequestRecord | None) -> list[RequestRecord | None]:
        items = [first]
        while len(items) < BATCH_LIMIT:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _settle(self, batch: list[RequestRecord]) -> None:
        for record in batch:
            try:
                record.settle()
                for sink in self.sinks:
                    sink(record)
            except Exception:  # one odd answer must not stop the log
                log.exception("reading a request's answer for the log failed")

    def _open(self) -> sqlite3.Connection | None:
        try:
            conn = store.open_writer(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._failed(f"cannot open the request log {self.path} ({exc})")
            return None
        return conn

    def _maybe_prune(self, conn: sqlite3.Connection, settings: LogSettings) -> None:
        now = time.monotonic()
        if self._since_prune < PRUNE_ROWS and now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune, self._since_prune = now, 0
        removed = store.prune(conn, settings.max_days, settings.max_bytes)
        if removed:
            log.info("request log: removed %d old rows (keeping %g days, %d bytes)", removed, *_limits(settings))

    def _failed(self, message: str) -> None:
        # docs/reliability.md 26: said once per condition, not once per request.
        if self._failing != message:
            self._failing = message
            log.warning(
                "%s; requests are served but not logged until it works again. "
                "Free disk space under %s or set requestLog to false.",
                message,
                self.path.parent,
            )

    def _recovered(self) -> None:
        if self._failing is not None:
            log.warning("the request log is written again (%d records were lost meanwhile)", self.dropped)
            self._failing = None


def _estimate(record: RequestRecord) -> int:
    """Bytes `record` adds to the log, roughly: its row and any kept prompt and answer."""
    bodies = len(record.request_body or b"") + sum(len(part) for part in record.answer or [])
    return ROW_ESTIMATE + bodies


def _limits(settings: LogSettings) -> tuple[float, int]:
    return settings.max_days, settings.max_bytes
