"""The request log against a real `anyclaude serve`, a scripted backend and the official anthropic SDK.

What a person relies on: every request is kept with its tokens, timings and Claude Code's ids; the
file is private, holds no prompt text unless logBodies is on, and outlives a restart; `anyclaude
requests` and `anyclaude usage` read it while the proxy runs.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.harness import Serve, anyclaude, scripted_entry, serves, start_serve, wait_until

StartServe = Callable[..., Serve]
SECRET_PROMPT = "the-private-prompt-7f3a"
CLAUDE_HEADERS = {
    "x-claude-code-session-id": "sess-1234",
    "x-claude-code-agent-id": "agent-7",
    "x-claude-code-parent-agent-id": "agent-1",
}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name="local", **kwargs)) as start:
        yield start


def client(s: Serve) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=30)


def logged(home: Path, count: int) -> list[dict[str, Any]]:
    """The request log's rows once it holds `count` of them (polled: the writer runs in the background)."""

    def read() -> list[dict[str, Any]]:
        path = home / "requests.db"
        if not path.exists():
            return []
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    return wait_until(lambda: (rows := read()) and len(rows) >= count and rows, 15, what=f"{count} logged requests")


def test_requests_are_logged_with_tokens_timings_and_claude_code_ids(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY")
    c = client(s)
    with c.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=[{"role": "user", "content": f"{SECRET_PROMPT} [script:cached]"}],
        extra_headers=CLAUDE_HEADERS,
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 900
    c.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.APIStatusError):
        c.messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "[script:error500]"}]
        )

    streamed, plain, failed = logged(s.home, 3)
    assert streamed["session_id"] == "sess-1234"
    assert (streamed["agent_id"], streamed["parent_agent_id"]) == ("agent-7", "agent-1")
    assert streamed["backend"] == "local" and streamed["model_asked"] == "claude-sonnet-4-6"
    assert streamed["streamed"] == 1 and streamed["status"] == 200 and streamed["error_type"] is None
    assert (streamed["input_tokens"], streamed["cached_tokens"], streamed["output_tokens"]) == (100, 900, 1)
    assert streamed["stop_reason"] == "end_turn"
    assert 0 < streamed["ttft"] <= streamed["duration"]
    assert streamed["request_bytes"] > len(SECRET_PROMPT)

    assert plain["streamed"] == 0 and plain["session_id"] is None
    assert (plain["input_tokens"], plain["output_tokens"], plain["stop_reason"]) == (12, 2, "end_turn")

    assert failed["status"] >= 500 and failed["error_type"] == "api_error"

    files = [s.home / name for name in ("requests.db", "requests.db-wal", "requests.db-shm")]
    for path in files:
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # logBodies is off: no prompt text anywhere in the log's files.
    assert not any(SECRET_PROMPT.encode() in p.read_bytes() for p in files if p.exists())

    # The terminal commands read the log while the proxy writes it.
    listed = anyclaude("requests", "-n", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows] == [plain["id"], failed["id"]]
    table = anyclaude("requests", "-n", "3").stdout.splitlines()
    assert table[0].split()[:3] == ["time", "session", "backend"], "plain text with a header when piped"
    assert "sess-123" in table[1] and "api_error" in table[3]
    totals = json.loads(anyclaude("usage", "--json").stdout)["usage"][-1]
    assert totals["key"] == "total" and totals["requests"] == 3 and totals["errors"] == 1
    assert totals["cached_tokens"] == 900 and totals["cache_hit_ratio"] == pytest.approx(900 / 1012, abs=1e-3)


def test_log_bodies_keeps_the_prompt_and_the_answer(serve: StartServe) -> None:
    s = serve(scripted_entry(), top={"logBodies": True})
    s.wait_state("READY")
    client(s).messages.create(
        model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": SECRET_PROMPT}]
    )
    (row,) = logged(s.home, 1)
    conn = sqlite3.connect(s.home / "requests.db")
    try:
        request, answer = conn.execute("SELECT request, answer FROM bodies WHERE id = ?", (row["id"],)).fetchone()
    finally:
        conn.close()
    assert SECRET_PROMPT.encode() in request
    assert b"Hello world" in answer


def test_the_request_log_survives_a_restart(serve: StartServe, tmp_path: Path) -> None:
    first = serve(scripted_entry())
    first.wait_state("READY")
    client(first).messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "one"}])
    logged(first.home, 1)
    first.interrupt()
    assert first.wait_exit() == 0

    second = serve(scripted_entry())
    second.wait_state("READY")
    client(second).messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "two"}])
    rows = logged(second.home, 2)
    assert [r["id"] for r in rows] == [1, 2]


def test_requests_follow_shows_new_requests_as_they_come(serve: StartServe, tmp_path: Path) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY")
    c = client(s)
    c.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "before"}])
    logged(s.home, 1)
    out = tmp_path / "follow.out"
    with out.open("wb") as sink:
        follower = subprocess.Popen(
            [sys.executable, "-m", "launcher", "requests", "-f", "-n", "0", "--json"], stdout=sink, stderr=sink
        )
    try:
        # The follower starts in its own time: keep sending until what it shows arrives.
        def shown() -> str:
            c.messages.create(model="claude-follow", max_tokens=8, messages=[{"role": "user", "content": "after"}])
            return out.read_text().strip()

        lines = wait_until(shown, 20, interval=0.3, what="a followed request").splitlines()
        rows = [json.loads(line) for line in lines]
        assert all(r["model_asked"] == "claude-follow" and r["id"] >= 2 for r in rows), "only new requests are shown"
    finally:
        follower.terminate()
        follower.wait(10)
