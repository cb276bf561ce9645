"""The request log's parts without a proxy: reading answers, the SQLite file, retention, usage figures,
and the writer thread's behaviour when the file cannot be written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from launcher.observe import store, usage
from launcher.observe.record import RequestRecord
from launcher.observe.recorder import LogSettings, Recorder
from tests.harness import wait_until


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(
        b"event: " + str(e["type"]).encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events
    )


def record(**fields: object) -> RequestRecord:
    r = RequestRecord(started=time.time(), started_at=time.perf_counter(), endpoint="messages")
    for key, value in fields.items():
        setattr(r, key, value)
    r.ended_at = r.started_at + 1.0
    return r


def test_a_streamed_answer_yields_usage_stop_reason_and_time_to_first_token() -> None:
    r = record(streamed=True, status=200)
    r.ended_at = None
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 50, "output_tokens": 0}}}
    r.chunk(sse(start))
    assert r.first_token_at is None, "message_start is not a token"
    r.chunk(sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
    r.chunk(sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}))
    assert r.first_token_at is not None
    for _ in range(20):  # more chunks than the tail keeps
        r.chunk(sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b"}}))
    usage_final = {"input_tokens": 40, "output_tokens": 21, "cache_read_input_tokens": 10}
    r.chunk(sse({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": usage_final}))
    r.chunk(sse({"type": "message_stop"}))
    r.ended_at = r.first_token_at + 2.0
    r.settle()
    assert (r.input_tokens, r.cached_tokens, r.output_tokens, r.stop_reason) == (40, 10, 21, "tool_use")
    assert r.decode_tps == pytest.approx(10.0)
    assert r.error_type is None


def test_a_stream_that_ends_in_an_error_event_is_logged_as_that_error() -> None:
    r = record(streamed=True, status=200)
    r.chunk(sse({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}))
    r.chunk(sse({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}))
    r.settle()
    assert r.error_type == "overloaded_error" and r.stop_reason is None


def test_a_stream_cut_before_message_stop_is_logged_incomplete() -> None:
    r = record(streamed=True, status=200)
    r.chunk(sse({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}))
    r.settle()
    assert r.error_type == "incomplete"


def test_a_json_answer_and_a_json_error_are_read() -> None:
    answer = record(
        json_answer=True,
        status=200,
        whole=json.dumps(
            {
                "type": "message",
                "model": "m",
                "stop_reason": "max_tokens",
                "usage": {"input_tokens": 3, "output_tokens": 9},
            }
        ).encode(),
    )
    answer.settle()
    assert (answer.stop_reason, answer.input_tokens, answer.output_tokens) == ("max_tokens", 3, 9)
    failed = record(json_answer=True, status=413, whole=b'{"type":"error","error":{"type":"request_too_large"}}')
    failed.settle()
    assert failed.error_type == "request_too_large"


def test_a_relayed_json_answer_in_many_chunks_is_read_whole() -> None:
    """A relayed whole answer reaches the log as chunks of a streaming response, however many there are."""
    r = record(json_answer=True, status=200)
    message = {"type": "message", "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 11}}
    raw = json.dumps({**message, "content": [{"type": "text", "text": "x" * 400}]}).encode()
    for start in range(0, len(raw), 40):  # ten and more network reads
        r.chunk(raw[start : start + 40])
    r.settle()
    assert (r.input_tokens, r.output_tokens, r.stop_reason) == (7, 11, "end_turn")


def test_a_compressed_relayed_answer_is_read_or_left_unjudged() -> None:
    """The real API may gzip its answer (the client's accept-encoding travels on): a gzip JSON answer is read;
    an encoded stream the log cannot read is not called incomplete."""
    import gzip

    r = record(json_answer=True, status=200, encoded="gzip")
    message = {"type": "message", "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 11}}
    packed = gzip.compress(json.dumps(message).encode())
    for start in range(0, len(packed), 16):
        r.chunk(packed[start : start + 16])
    r.settle()
    assert (r.input_tokens, r.output_tokens, r.stop_reason) == (7, 11, "end_turn")
    streamed = record(streamed=True, status=200, encoded="br")
    streamed.chunk(b"\x8b\x01\x80 not readable")
    streamed.settle()
    assert streamed.error_type is None and streamed.output_tokens is None


def test_claude_code_ids_come_from_the_headers_and_nothing_else_does() -> None:
    headers = [
        (b"x-api-key", b"sk-secret"),
        (b"x-claude-code-session-id", b"s1"),
        (b"x-claude-code-agent-id", b"a1"),
        (b"x-claude-code-parent-agent-id", b"p1"),
    ]
    r = RequestRecord.begin("messages", headers)
    assert (r.session_id, r.agent_id, r.parent_agent_id) == ("s1", "a1", "p1")
    assert "sk-secret" not in repr(r)


def write(path: Path, records: list[RequestRecord]) -> None:
    conn = store.open_writer(path)
    try:
        store.insert(conn, records)
    finally:
        conn.close()


def test_prune_drops_rows_older_than_max_days(tmp_path: Path) -> None:
    path = tmp_path / "requests.db"
    now = time.time()
    write(path, [record(started=now - 10 * 86400), record(started=now - 2 * 86400), record(started=now)])
    conn = store.open_writer(path)
    try:
        assert store.prune(conn, max_days=5, max_bytes=2**30, now=now) == 1
        assert len(store.rows(conn, 10)) == 2
    finally:
        conn.close()


def test_prune_keeps_the_log_under_max_bytes_by_dropping_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "requests.db"
    write(path, [record(model_asked=f"model-{i}-" + "x" * 200) for i in range(3000)])
    conn = store.open_writer(path)
    try:
        before = store.used_bytes(conn)
        limit = before // 3
        removed = store.prune(conn, max_days=365, max_bytes=limit)
        assert removed > 0
        assert store.used_bytes(conn) <= limit
        kept = store.rows(conn, 5000)
        assert kept[-1]["model_asked"].startswith("model-2999-"), "the newest rows stay"
    finally:
        conn.close()
    assert store.disk_size(path) < before, "freed pages are given back to the file system"


def test_usage_groups_and_percentiles(tmp_path: Path) -> None:
    path = tmp_path / "requests.db"
    rows = [
        record(backend="a", session_id="s1", input_tokens=100, cached_tokens=300, output_tokens=10, status=200),
        record(
            backend="a",
            session_id="s1",
            input_tokens=100,
            cached_tokens=100,
            output_tokens=10,
            status=529,
            error_type="overloaded_error",
        ),
        record(backend="b", session_id="s2", input_tokens=200, cached_tokens=0, output_tokens=5, status=200),
        record(backend="b", endpoint="count_tokens", status=200),
    ]
    for i, r in enumerate(rows):
        r.first_token_at = r.started_at + (i + 1) * 0.1
    write(path, rows)
    with store.reader(path) as conn:
        by_backend = usage.summarize(conn, None, "backend")
    a, b, total = by_backend
    assert (a.key, a.requests, a.errors, a.cached_tokens) == ("a", 2, 1, 400)
    assert a.cache_hit_ratio == pytest.approx(400 / 600, abs=1e-3)
    assert b.requests == 1, "count_tokens calls are not requests for usage"
    assert total.requests == 3 and total.ttft_p50 == pytest.approx(0.2) and total.ttft_p95 == pytest.approx(0.3)


def test_since_accepts_spans_today_and_dates() -> None:
    now = 1_800_000_000.0
    assert usage.parse_since("2h", now) == now - 7200
    assert usage.parse_since("7d", now) == now - 7 * 86400
    assert usage.parse_since("2026-12-01") is not None
    assert usage.parse_since("today", now) <= now  # type: ignore[operator]
    with pytest.raises(ValueError, match="span"):
        usage.parse_since("yesterday-ish", now)


def test_an_unwritable_log_drops_records_says_so_once_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "requests.db"
    path.mkdir()  # a folder where the file should be: every open fails, as on a full or broken disk
    recorder = Recorder(path, lambda: LogSettings())
    recorder.retry_interval = 0.0  # every batch tries the file again
    recorder.start()
    try:
        for count in (1, 2, 3):
            recorder.submit(record(status=200))
            wait_until(lambda n=count: recorder.dropped >= n, 5, what=f"{count} dropped records")
        warnings = [r for r in caplog.records if "cannot open the request log" in r.getMessage()]
        assert len(warnings) == 1, "the failure is reported once, not per request"
        path.rmdir()
        wait_until(lambda: (recorder.submit(record(status=200)), recorder.written)[1] >= 1, 5, what="writes to resume")
    finally:
        recorder.close()
    with store.reader(path) as conn:
        assert conn is not None and len(store.rows(conn)) >= 1
    assert any("written again" in r.getMessage() for r in caplog.records)


def test_doctor_says_where_the_request_log_lives_and_how_big_it_is(tmp_path: Path) -> None:
    from launcher.doctor.home import home_checks
    from launcher.paths import Home

    home = Home(tmp_path / "home").ensure()
    (before,) = [c for c in home_checks(home) if c.name == "home.request-log"]
    assert str(home.root / "requests.db") in before.finding and "no request yet" in before.finding
    write(home.root / "requests.db", [record(status=200) for _ in range(10)])
    (after,) = [c for c in home_checks(home) if c.name == "home.request-log"]
    assert str(home.root / "requests.db") in after.finding
    assert "10 requests" in after.finding and "KB" in after.finding


def test_request_log_keys_have_defaults_and_bad_values_name_the_field(tmp_path: Path) -> None:
    from launcher.config import parse_config_text
    from launcher.errors import ConfigError

    path = tmp_path / ".anyclauderc.json"
    config = parse_config_text("{}", path, {})
    assert (config.request_log, config.request_log_max_days, config.request_log_max_bytes) == (True, 30, 64 * 2**20)
    custom = parse_config_text('{"requestLog": false, "requestLogMaxDays": 7, "requestLogMaxBytes": 1048576}', path, {})
    assert (custom.request_log, custom.request_log_max_days, custom.request_log_max_bytes) == (False, 7, 2**20)
    with pytest.raises(ConfigError) as bad:
        parse_config_text('{"requestLogMaxDays": 0}', path, {})
    assert str(path) in bad.value.message and "requestLogMaxDays" in bad.value.message


def test_with_the_request_log_off_nothing_is_written_but_metrics_still_count(tmp_path: Path) -> None:
    from launcher.observe.metrics import Metrics

    metrics = Metrics()
    recorder = Recorder(tmp_path / "requests.db", lambda: LogSettings(enabled=False), sinks=(metrics.observe,))
    recorder.start()
    try:
        recorder.submit(record(status=200, backend="local"))
        wait_until(
            lambda: (
                b'anyclaude_requests_total{backend="local",endpoint="messages",status="200"} 1.0'
                in metrics.render(None, 0)
            ),
            5,
            what="the request in the metrics",
        )
    finally:
        recorder.close()
    assert not (tmp_path / "requests.db").exists()
