"""The request log's file: `$ANYCLAUDE_HOME/requests.db`, SQLite in WAL mode, private (0600).

WAL lets `anyclaude requests -f`, `usage` and the dashboard read while the proxy writes. One writer
(the recorder's thread) owns a connection; every reader opens its own. Rows older than
`requestLogMaxDays` are deleted by `prune`; `fit` keeps the files on disk (database, write-ahead log
and its index) within `requestLogMaxBytes` after every write, deleting the oldest rows.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from launcher.observe.record import RequestRecord
from launcher.paths import FILE_MODE, Home, private_dir

FILE_NAME = "requests.db"
SCHEMA_VERSION = 2
# A busy writer holds the lock for a few milliseconds per batch; readers wait this long for it.
BUSY_TIMEOUT_MS = 5_000
# The largest id (and number) SQLite can bind: a query past it fails instead of matching nothing.
MAX_ID = 2**63 - 1
# The write-ahead log is folded into the database once it holds this share of requestLogMaxBytes, and cut
# back to that size on disk (SQLite otherwise keeps its largest size: 4 MB over a 256 KB limit).
WAL_SHARE = 0.04
# Once the files take FIT_AT of the limit, the oldest rows go until they take FIT_TARGET of it. The gap
# below the limit is what one write adds before the next check: its pages in the write-ahead log and, once
# folded in, in the database (a few 4 KB pages each, ~10 % of a 256 KB limit). The gap under FIT_AT is room
# for the next writes, so a full log is not pruned again on the very next one.
FIT_AT = 0.9
FIT_TARGET = 0.8

# Columns of `requests`, in order; every reader returns rows as dicts with these keys.
COLUMNS = (
    "id",
    "started",
    "endpoint",
    "session_id",
    "agent_id",
    "parent_agent_id",
    "backend",
    "model_asked",
    "model_served",
    "streamed",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "ttft",
    "duration",
    "decode_tps",
    "stop_reason",
    "status",
    "error_type",
    "request_bytes",
    "text_tool_calls",
    "tool_parse_failed",
)
_INTEGER_COLUMNS = ("streamed", "status", "tool_parse_failed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    {", ".join(f"{c} {'INTEGER' if c in _INTEGER_COLUMNS else ''}".strip() for c in COLUMNS[2:])}
);
CREATE INDEX IF NOT EXISTS requests_started ON requests(started);
CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, request BLOB, answer BLOB);
"""
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * (len(COLUMNS) - 1))})"


def log_path(home: Home) -> Path:
    return home.root / FILE_NAME


def _side_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def disk_size(path: Path) -> int:
    """Bytes the log takes on disk now (database, write-ahead log and index)."""
    total = 0
    for part in _side_files(path):
        with contextlib.suppress(OSError):
            total += part.stat().st_size
    return total


def open_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection; creates the file (0600) and the schema when missing.

    Raises:
        sqlite3.Error / OSError: the file cannot be created or opened.
    """
    private_dir(path.parent)
    # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
        # auto_vacuum takes effect only before the first table exists; it lets `prune` give space back.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit is not fsynced, yet a crash never corrupts the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    _add_missing_columns(conn)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    for part in _side_files(path):
        with contextlib.suppress(OSError):
            if part.stat().st_mode & 0o777 != FILE_MODE:
                part.chmod(FILE_MODE)
    return conn


def _present(conn: sqlite3.Connection) -> set[str]:
    return {str(row[1]) for row in conn.execute("PRAGMA table_info(requests)")}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Columns a log written by an older anyclaude lacks (their old rows read as NULL)."""
    present = _present(conn)
    for column in COLUMNS:
        if column not in present:
            kind = " INTEGER" if column in _INTEGER_COLUMNS else ""
            conn.execute(f"ALTER TABLE requests ADD COLUMN {column}{kind}")


@contextlib.contextmanager
def reader(path: Path) -> Iterator[sqlite3.Connection | None]:
    """A connection for queries, or None when there is no log yet (a reader never creates one)."""
    if not path.exists():
        yield None
        return
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # The writer sets the version after creating the tables: a file caught in between reads as empty.
        yield conn if conn.execute("PRAGMA user_version").fetchone()[0] else None
    finally:
        conn.close()


def insert(conn: sqlite3.Connection, records: Sequence[RequestRecord]) -> None:
    """Write `records` in one transaction."""
    with _transaction(conn):
        for r in records:
            row_id = conn.execute(_INSERT, _row(r)).lastrowid
            if r.request_body is not None or r.answer:
                answer = b"".join(r.answer or [])
                conn.execute(
                    "INSERT INTO bodies (id, request, answer) VALUES (?, ?, ?)", (row_id, r.request_body, answer)
                )


def _row(r: RequestRecord) -> tuple[Any, ...]:
    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    return (
        r.started,
        r.endpoint,
        r.session_id,
        r.agent_id,
        r.parent_agent_id,
        r.backend,
        r.model_asked,
        r.model_served,
        int(r.streamed),
        r.input_tokens,
        r.cached_tokens,
        r.output_tokens,
        rounded(r.ttft, 4),
        rounded(r.duration, 4),
        rounded(r.decode_tps, 2),
        r.stop_reason,
        r.status,
        r.error_type,
        r.request_bytes,
        r.text_tool_calls,
        int(r.tool_parse_failed),
    )


def rows(
    conn: sqlite3.Connection,
    limit: int = 50,
    after_id: int = 0,
    since: float | None = None,
    parse_failed: bool = False,
) -> list[dict[str, Any]]:
    """Requests, oldest first: the last `limit` with id > `after_id` (and started ≥ `since`; and, with
    `parse_failed`, only those whose text looked like a tool call that could not be made one)."""
    clauses: list[str] = ["id > ?"]
    params: list[Any] = [after_id]
    if since is not None:
        clauses.append("started >= ?")
        params.append(since)
    present = _present(conn)  # a log from an older anyclaude, not yet opened by a newer writer, lacks some
    if parse_failed:
        clauses.append("tool_parse_failed = 1" if "tool_parse_failed" in present else "0")
    selected = ", ".join(c if c in present else f"NULL AS {c}" for c in COLUMNS)
    query = f"SELECT {selected} FROM requests WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
    found = conn.execute(query, (*params, max(0, limit))).fetchall()
    return [dict(zip(COLUMNS, row, strict=True)) for row in reversed(found)]


def count(conn: sqlite3.Connection) -> int:
    """How many requests the log holds."""
    return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


def latest_id(conn: sqlite3.Connection) -> int:
    """The id of the newest request (0 for an empty log)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()[0])


def size_wal(conn: sqlite3.Connection, max_bytes: int) -> None:
    """Keep the write-ahead log a small share of `max_bytes` on disk (see WAL_SHARE)."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    wal_bytes = max(page_size, int(max_bytes * WAL_SHARE))
    conn.execute(f"PRAGMA wal_autocheckpoint={max(1, wal_bytes // page_size)}")
    conn.execute(f"PRAGMA journal_size_limit={wal_bytes}")


def fit(conn: sqlite3.Connection, path: Path, max_bytes: int) -> int:
    """Keep the log's files on disk within `max_bytes`; returns how many rows went.

    Near the limit (FIT_AT), the write-ahead log is folded into the database first (often enough on its
    own); then the oldest rows go until the files take at most FIT_TARGET of the limit, and the freed pages
    are given back to the file system. The index file (-shm, 32 KB) and what is left of the
    write-ahead log count against the limit too.
    """
    if disk_size(path) <= max_bytes * FIT_AT:
        return 0
    _checkpoint(conn)
    target = int(max_bytes * FIT_TARGET)
    total = disk_size(path)
    if total <= target:
        return 0
    with contextlib.suppress(OSError):
        target -= total - path.stat().st_size  # the -shm file and any write-ahead log a reader kept
    deleted = 0
    for _ in range(8):
        used = used_bytes(conn)
        held = count(conn)
        if used <= target or held == 0:
            break
        share = min(1.0, (used - target) / used + 0.02)
        with _transaction(conn):
            last = conn.execute(
                "SELECT id FROM requests ORDER BY id LIMIT 1 OFFSET ?", (max(0, int(held * share) - 1),)
            ).fetchone()
            deleted += _delete_through(conn, int(last[0]))
    if deleted:
        conn.execute("PRAGMA incremental_vacuum")
        _checkpoint(conn)
    return deleted


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Fold the write-ahead log into the database and cut the log file to nothing (a reader may delay it)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def used_bytes(conn: sqlite3.Connection) -> int:
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def prune(conn: sqlite3.Connection, max_days: float, max_bytes: int, now: float | None = None) -> int:
    """Delete rows older than `max_days`, then the oldest rows until the data fits `max_bytes`.

    Returns how many rows went. Freed pages are given back to the file system.
    """
    now = time.time() if now is None else now
    deleted = 0
    with _transaction(conn):
        cutoff = conn.execute("SELECT MAX(id) FROM requests WHERE started < ?", (now - max_days * 86400,)).fetchone()
        if cutoff[0] is not None:
            deleted += _delete_through(conn, int(cutoff[0]))
    # Past the size limit: drop a share of the oldest rows proportional to the excess, plus a tenth,
    # so a full log is not pruned again on the very next batch.
    for _ in range(8):
        used = used_bytes(conn)
        held = count(conn)
        if used <= max_bytes or held == 0:
            break
        share = min(1.0, (used - max_bytes) / used + 0.1)
        with _transaction(conn):
            last = conn.execute(
                "SELECT id FROM requests ORDER BY id LIMIT 1 OFFSET ?", (max(0, int(held * share) - 1),)
            ).fetchone()
            deleted += _delete_through(conn, int(last[0]))
    if deleted:
        conn.execute("PRAGMA incremental_vacuum")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return deleted


def _delete_through(conn: sqlite3.Connection, last_id: int) -> int:
    conn.execute("DELETE FROM bodies WHERE id <= ?", (last_id,))
    return int(conn.execute("DELETE FROM requests WHERE id <= ?", (last_id,)).rowcount)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
