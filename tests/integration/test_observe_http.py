"""`/metrics` and the dashboard's endpoints over real HTTP on a real `anyclaude serve`: what they report,
and who may read them (the API's rules: loopback Host, apiKey, Origin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Serve, anyclaude, scripted_entry, serves, start_serve, wait_until

StartServe = Callable[..., Serve]
KEY = "proxy-key-31337"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name="local", **kwargs)) as start:
        yield start


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by the official client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_requests_tokens_latency_and_backend_state(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY")
    c = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=30)
    for _ in range(2):
        with c.messages.stream(
            model="claude-sonnet-4-6", max_tokens=8, messages=[{"role": "user", "content": "[script:cached]"}]
        ) as stream:
            stream.get_final_message()

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        response = httpx.get(f"{s.proxy_url}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = samples(response.text)
        done = found.get(
            ("anyclaude_requests_total", (("backend", "local"), ("endpoint", "messages"), ("status", "200")))
        )
        return found if done == 2 else None

    found = wait_until(scraped, 15, interval=0.1, what="two requests in /metrics")
    assert found[("anyclaude_tokens_total", (("backend", "local"), ("kind", "cached")))] == 1800
    assert found[("anyclaude_tokens_total", (("backend", "local"), ("kind", "input")))] == 200
    assert found[("anyclaude_time_to_first_token_seconds_count", (("backend", "local"),))] == 2
    assert found[("anyclaude_request_duration_seconds_count", (("backend", "local"),))] == 2
    assert found[("anyclaude_backend_state", (("backend", "local"), ("state", "READY")))] == 1
    assert found[("anyclaude_backend_state", (("backend", "local"), ("state", "FATAL")))] == 0
    assert found[("anyclaude_breaker_state", (("backend", "local"), ("state", "closed")))] == 1
    assert found[("anyclaude_backend_restarts_total", (("backend", "local"),))] == 0


def test_metrics_show_the_queue_of_our_mlx_server(serve: StartServe, tiny_model: Path) -> None:
    from launcher.supervision.ports import free_port

    s = serve({"type": "mlx-server", "embedded": True, "model": str(tiny_model), "port": free_port(), "command": None})
    wait_until(lambda: "Serving the Anthropic API" in s.text(), 60, what="the embedded server")
    found = samples(httpx.get(f"{s.proxy_url}/metrics", timeout=10).text)
    assert found[("anyclaude_backend_queue_waiting", (("backend", "local"),))] == 0
    assert found[("anyclaude_backend_queue_running", (("backend", "local"),))] == 0


def test_the_dashboard_shows_both_tiers_of_our_mlx_servers_prompt_cache(
    serve: StartServe, tiny_model: Path, tmp_path: Path
) -> None:
    from launcher.supervision.ports import free_port

    entry = {"type": "mlx-server", "model": str(tiny_model), "port": free_port(), "cacheDir": str(tmp_path / "kv")}
    s = serve({**entry, "command": None})
    s.wait_state("READY")
    client = anthropic.Anthropic(base_url=s.proxy_url, api_key="unused", max_retries=0)
    client.messages.create(model="tiny", max_tokens=4, messages=[{"role": "user", "content": "Hello there."}])

    def tiers() -> dict[str, dict[str, object]] | None:
        state = httpx.get(f"{s.proxy_url}/ui/api/state", timeout=10).json()
        found: dict[str, dict[str, object]] | None = state["backends"][0]["prompt_cache"]
        return found

    assert wait_until(lambda: (t := tiers()) is not None and t["ram"]["slots"], 30, what="a RAM slot")
    shown = tiers()
    assert shown is not None and set(shown) == {"ram", "disk"}
    assert set(shown["disk"]) == {"slots", "bytes", "max_bytes", "hits", "loads", "load_s"}
    assert isinstance(shown["ram"]["max_bytes"], int) and shown["ram"]["max_bytes"] > 0


def test_serve_prints_the_dashboard_address_and_the_dashboard_command_finds_it(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY")
    wait_until(lambda: f"Dashboard: {s.proxy_url}/ui" in s.text(), 10, what="the dashboard line")
    shown = anyclaude("dashboard", "--no-open")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"{s.proxy_url}/ui"
    page = httpx.get(f"{s.proxy_url}/ui", timeout=10)
    assert page.status_code == 200 and "<title>anyclaude</title>" in page.text
    assert httpx.get(f"{s.proxy_url}/ui/static/app.js", timeout=10).status_code == 200


def test_dashboard_and_metrics_follow_the_api_access_rules(serve: StartServe) -> None:
    s = serve(scripted_entry(), top={"apiKey": KEY})
    s.wait_state("READY")
    base = s.proxy_url
    with httpx.Client(base_url=base, timeout=10) as http:
        # The page and its files hold no data: a browser loads them without the key.
        assert http.get("/ui").status_code == 200
        assert http.get("/ui/static/app.css").status_code == 200
        for path in ("/metrics", "/ui/api/state", "/ui/api/requests", "/ui/events"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["type"] == "authentication_error"
        key = {"x-api-key": KEY}
        assert http.get("/metrics", headers=key).status_code == 200
        assert http.get("/ui/api/state", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        # A page of another site open in the same browser: its Origin gives it away.
        foreign = http.get("/ui/api/requests", headers={**key, "origin": "https://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "permission_error"
        own = http.get("/ui/api/requests", headers={**key, "origin": base})
        assert own.status_code == 200
        rollback = http.post(
            "/ui/api/rollback", headers={**key, "origin": "https://evil.example", "content-type": "text/plain"}
        )
        assert rollback.status_code == 403
        plain = http.post("/ui/api/rollback", headers={**key, "content-type": "text/plain"}, content=b'{"index": 1}')
        assert plain.status_code == 415, "a form post cannot roll back"
        # DNS rebinding: a foreign Host header is refused before anything runs, the page included.
        assert http.get("/ui", headers={"host": "evil.example"}).status_code == 403
        assert http.get("/metrics", headers={**key, "host": "evil.example"}).status_code == 403
        assert http.get("/ui/static/web.py").status_code == 404, "only the page's own files are served"

    # The key a client sent is never copied into the request log.
    client = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0, timeout=30)
    client.messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    db = s.home / "requests.db"
    wait_until(lambda: db.exists() and db.stat().st_size > 0, 10, what="the request log")
    with httpx.Client(base_url=base, timeout=10, headers={"x-api-key": KEY}) as http:
        wait_until(lambda: http.get("/ui/api/requests").json()["requests"], 10, what="the logged request")
        assert KEY not in http.get("/ui/api/state").text
    files = [db, db.with_name("requests.db-wal")]
    assert not any(KEY.encode() in p.read_bytes() for p in files if p.exists())


def test_one_origin_rule_for_the_api_and_the_dashboard(serve: StartServe) -> None:
    """`corsOrigins: ["*"]` opens the dashboard's API to other pages exactly as it opens the Messages API."""
    s = serve(scripted_entry(), top={"apiKey": KEY, "corsOrigins": ["*"]})
    s.wait_state("READY")
    headers = {"x-api-key": KEY, "origin": "https://elsewhere.example"}
    with httpx.Client(base_url=s.proxy_url, timeout=10, headers=headers) as http:
        assert http.get("/v1/models").status_code == 200
        assert http.get("/ui/api/requests").status_code == 200
