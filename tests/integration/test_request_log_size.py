"""requestLogMaxBytes holds at all times, on disk: the database, its write-ahead log and the -shm index
together stay within 1.1x the limit while thousands of requests are written, with readers open (the
dashboard, `requests -f`) as they would be; the newest rows are the ones kept.

The writer is the proxy's own (`Recorder`, its thread, a real SQLite file); a second thread measures the
files on disk the whole time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from launcher.observe import store
from launcher.observe.record import RequestRecord
from launcher.observe.recorder import LogSettings, Recorder
from tests.harness import wait_until

LIMIT = 256 * 1024


def record(i: int, body: bytes | None = None) -> RequestRecord:
    r = RequestRecord(started=time.time(), started_at=time.perf_counter(), endpoint="messages")
    r.session_id, r.backend, r.model_asked, r.status = f"session-{i // 50}", "local", f"model-{i}", 200
    r.request_body, r.ended_at = body, r.started_at + 0.5
    return r


@pytest.mark.parametrize(("count", "body"), [(3000, None), (600, b"p" * 2000)], ids=["rows", "bodies"])
def test_the_request_log_stays_within_its_limit_on_disk_at_all_times(
    tmp_path: Path, count: int, body: bytes | None
) -> None:
    path = tmp_path / "requests.db"
    recorder = Recorder(path, lambda: LogSettings(max_bytes=LIMIT))
    sizes: list[int] = []
    done = threading.Event()

    def measure() -> None:
        while not done.is_set():
            sizes.append(store.disk_size(path))
            time.sleep(0.001)

    def read_now_and_then() -> None:  # a reader holds a snapshot for a moment, as the dashboard does
        while not done.is_set():
            if path.exists():
                with store.reader(path) as conn:
                    if conn is not None:
                        store.rows(conn, 50)
            time.sleep(0.05)

    threads = [threading.Thread(target=measure), threading.Thread(target=read_now_and_then)]
    for thread in threads:
        thread.start()
    recorder.start()
    try:
        for i in range(count):
            recorder.submit(record(i, body))
            if i % 100 == 99:  # in bursts, as requests come
                wait_until(lambda n=i + 1: recorder.written >= n, 30, what=f"{i + 1} written")
        wait_until(lambda: recorder.written == count, 30, what="every record written")
    finally:
        recorder.close()
        done.set()
        for thread in threads:
            thread.join()
    sizes.append(store.disk_size(path))
    assert max(sizes) <= LIMIT * 1.1, f"the files reached {max(sizes)} bytes ({max(sizes) / LIMIT:.2f}x the limit)"
    conn = sqlite3.connect(path)
    try:
        models = [row[0] for row in conn.execute("SELECT model_asked FROM requests ORDER BY id")]
    finally:
        conn.close()
    assert models[-1] == f"model-{count - 1}", "the newest rows stay"
    assert len(models) >= (200 if body is None else 40), f"only {len(models)} rows kept in {LIMIT} bytes"
    assert models == [f"model-{i}" for i in range(count - len(models), count)], "the oldest go first"
