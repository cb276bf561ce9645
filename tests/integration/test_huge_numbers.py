"""Numbers past what the request log can hold, in a query or on the command line: a 400 in the API's
error shape or a usage error (exit 2), never a 500, a stream cut short or a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.harness import Serve, anyclaude, scripted_entry, serves, start_serve, wait_until

StartServe = Callable[..., Serve]
HUGE = "99999999999999999999"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name="local", **kwargs)) as start:
        yield start


def test_huge_numbers_in_dashboard_queries_get_a_400(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY")
    wait_until(lambda: "Serving the Anthropic API" in s.text(), 15, what="the proxy")
    c = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=30)
    c.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    for path in (
        f"/ui/api/requests?after={HUGE}",
        f"/ui/api/requests?limit={HUGE}",
        f"/ui/api/requests?after=-{HUGE}",
        f"/ui/events?after={HUGE}",
    ):
        response = httpx.get(f"{s.proxy_url}{path}", timeout=10)
        assert response.status_code == 400, (path, response.status_code, response.text)
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        assert "after" in body["error"]["message"] or "limit" in body["error"]["message"], body
    # The largest id the log can hold is still a valid query.
    ok = httpx.get(f"{s.proxy_url}/ui/api/requests?after=9223372036854775807", timeout=10)
    assert ok.status_code == 200 and ok.json() == {"requests": []}
    assert "Traceback" not in s.text()


@pytest.mark.parametrize("count", [HUGE, "-1"])
def test_requests_with_a_huge_count_is_a_usage_error(count: str) -> None:
    result = anyclaude("requests", "-n", count)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "-n" in result.stderr or "--lines" in result.stderr, result.stderr


def test_logs_with_a_huge_count_is_a_usage_error() -> None:
    result = anyclaude("logs", "-n", HUGE)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
