"""Who may use the proxy, with real processes: a page on another origin cannot make it run a prompt, a
connection that never finishes its headers is closed (docs/reliability.md 28), and the access settings a config
edit changes take effect at once (issue 14.11)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from launcher.supervision.ports import free_port
from tests.harness import Serve, launch_serve, wait_until

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def _serve(tmp_path: Path, **top: Any) -> tuple[Serve, Path, dict[str, Any]]:
    port = free_port()
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}"]
    data: dict[str, Any] = {
        "port": free_port(),
        "backend": "s",
        "backends": {"s": {"command": command, "port": port, "healthInterval": 200}},
        **top,
    }
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps(data))
    s = launch_serve(path, "s", tmp_path / "marks", port)
    s.wait_state("READY")
    wait_until(lambda: "Serving the Anthropic API" in s.text(), 10)
    return s, path, data


def _requests(s: Serve) -> int:
    return int(httpx.get(f"http://127.0.0.1:{s.port}/_stats").json()["requests"])


def test_a_cross_origin_simple_post_is_refused_before_it_runs(tmp_path: Path) -> None:
    s, _, _ = _serve(tmp_path, corsOrigins=["https://allowed.example"])
    try:
        # What a page on evil.example can send without a preflight: a text/plain POST.
        headers = {"content-type": "text/plain", "origin": "https://evil.example"}
        reply = httpx.post(f"{s.proxy_url}/v1/messages", content=json.dumps(BODY), headers=headers, timeout=10)
        assert reply.status_code == 403, reply.text
        assert reply.json()["error"]["type"] == "permission_error"
        assert "https://evil.example" in reply.json()["error"]["message"]
        assert _requests(s) == 0, "the prompt must never reach the backend"
        allowed = {"origin": "https://allowed.example"}
        ok = httpx.post(f"{s.proxy_url}/v1/messages", json=BODY, headers=allowed, timeout=10)
        assert ok.status_code == 200, ok.text
        assert ok.headers["access-control-allow-origin"] == "https://allowed.example"
        assert httpx.post(f"{s.proxy_url}/v1/messages", json=BODY, timeout=10).status_code == 200, "no Origin: a CLI"
    finally:
        s.close()


def test_a_connection_that_never_finishes_its_headers_is_closed(tmp_path: Path) -> None:
    s, _, _ = _serve(tmp_path, headerTimeout=1000)
    try:
        with socket.create_connection(("127.0.0.1", s.proxy_port), timeout=10) as silent:
            started = time.monotonic()
            assert silent.recv(1) == b"", "a silent connection must be closed"
            assert time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", s.proxy_port), timeout=10) as slow:
            started = time.monotonic()
            closed = False
            request = b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
            for byte in request:  # one byte every 100 ms: a slowloris
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                slow.settimeout(0.1)
                try:
                    if slow.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            assert closed and time.monotonic() - started < 5, "a slow-headers connection must be closed"
        assert httpx.post(f"{s.proxy_url}/v1/messages", json=BODY, timeout=10).status_code == 200
    finally:
        s.close()


def test_access_settings_edited_live_take_effect(tmp_path: Path) -> None:
    s, path, data = _serve(tmp_path)
    url = f"{s.proxy_url}/v1/messages"
    try:
        assert httpx.post(url, json=BODY, timeout=10).status_code == 200

        def edit(**changes: Any) -> None:
            before = s.text().count("Config applied")
            path.write_text(json.dumps({**data, **changes}))
            wait_until(lambda: s.text().count("Config applied") > before, 15, what=f"the edit {changes}")

        edit(apiKey="live-key-0123456789")
        assert httpx.post(url, json=BODY, timeout=10).status_code == 401
        assert httpx.post(url, json=BODY, headers={"x-api-key": "live-key-0123456789"}, timeout=10).status_code == 200
        edit(corsOrigins=["https://app.example"])
        origin = {"origin": "https://app.example"}
        assert httpx.post(url, json=BODY, headers=origin, timeout=10).status_code == 200
        edit(maxBodyBytes=1024)
        assert httpx.post(url, json={**BODY, "system": "x" * 2000}, timeout=10).status_code == 413
        edit()  # back to the start: no key
        assert httpx.post(url, json=BODY, timeout=10).status_code == 200
    finally:
        s.close()
