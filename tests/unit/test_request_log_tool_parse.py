"""The request log's record of tool calls written as text: its columns, filter, and logs from before them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from launcher.observe import store
from launcher.observe.record import RequestRecord


def record(recovered: int | None, failed: bool) -> RequestRecord:
    r = RequestRecord(time.time(), time.perf_counter(), "messages", status=200)
    r.text_tool_calls, r.tool_parse_failed = recovered, failed
    return r


def test_recovered_calls_and_the_failure_flag_are_stored_and_filtered(tmp_path: Path) -> None:
    conn = store.open_writer(tmp_path / "requests.db")
    store.insert(conn, [record(2, False), record(0, True), record(None, False)])
    assert [(r["text_tool_calls"], r["tool_parse_failed"]) for r in store.rows(conn)] == [(2, 0), (0, 1), (None, 0)]
    assert [r["id"] for r in store.rows(conn, parse_failed=True)] == [2]
    conn.close()


def test_a_log_from_before_the_columns_is_read_and_then_given_them(tmp_path: Path) -> None:
    path = tmp_path / "requests.db"
    old = sqlite3.connect(path)
    columns = [c for c in store.COLUMNS[2:] if c not in ("text_tool_calls", "tool_parse_failed")]
    old.execute(f"CREATE TABLE requests (id INTEGER PRIMARY KEY, started REAL NOT NULL, {', '.join(columns)})")
    old.execute("INSERT INTO requests (started, endpoint, status) VALUES (1.0, 'messages', 200)")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    with store.reader(path) as conn:
        assert conn is not None
        assert [(r["id"], r["tool_parse_failed"]) for r in store.rows(conn)] == [(1, None)]
        assert store.rows(conn, parse_failed=True) == []
    writer = store.open_writer(path)
    store.insert(writer, [record(0, True)])
    assert [(r["id"], r["tool_parse_failed"]) for r in store.rows(writer, parse_failed=True)] == [(2, 1)]
    writer.close()
