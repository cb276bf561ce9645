"""`anyclaude serve` end to end: proxy + supervised backend, with the official anthropic SDK as the client.

docs/reliability.md items 1 (requests wait for a starting backend), 6 (proxy port taken), 7 (backend killed
mid-stream), 9 (circuit breaker), and the embedded MLX server.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from launcher.supervision.ports import free_port
from tests.harness import Serve, alive, scripted_entry, serves, start_serve, wait_until

StartServe = Callable[..., Serve]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name="local", **kwargs)) as start:
        yield start


def client(s: Serve, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, **kwargs)


def ask(c: anthropic.Anthropic, text: str = "hi") -> str:
    reply = c.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": text}])
    return "".join(block.text for block in reply.content if block.type == "text")


def test_request_sent_while_the_backend_starts_waits_and_succeeds(serve: StartServe) -> None:
    s = serve(scripted_entry("--ready-after", "2.0"))
    wait_until(lambda: s.state() == "STARTING", 10, what="STARTING")
    started = time.monotonic()
    assert ask(client(s, timeout=30)) == "Hello world"
    assert time.monotonic() - started >= 0.5, "the request should have waited for the backend"
    assert s.state() == "READY"


def test_taken_proxy_port_exits_at_once_and_starts_no_backend(serve: StartServe, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        s = serve(scripted_entry(), top={"port": port})
        assert s.wait_exit(timeout=20) == 1
        assert f"Port {port} is in use by pid {os.getpid()}" in s.text()
    assert not (s.home / "run" / "local.json").exists(), "no backend may be started"


def test_backend_killed_mid_stream_gives_a_clean_error_then_recovers(serve: StartServe) -> None:
    s = serve(scripted_entry("--script", "hang"))
    s.wait_state("READY")
    victim = s.backend_pid()
    c = client(s, timeout=30)
    with (
        pytest.raises(anthropic.APIError),
        c.messages.stream(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "go"}]
        ) as stream,
    ):
        for event in stream:
            if event.type == "content_block_delta":
                os.kill(victim, signal.SIGKILL)
    wait_until(lambda: s.state() == "READY" and s.backend_pid() != victim, 15, what="a restarted backend")
    assert not alive(victim)
    reply = c.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=[{"role": "user", "content": "again [script:text]"}],
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "Hello world"


def test_breaker_opens_refuses_fast_and_lets_exactly_one_probe_through(serve: StartServe) -> None:
    entry = {**scripted_entry(), "breakerFailures": 3, "breakerResetTimeout": 1500, "healthInterval": 60000}
    s = serve(entry)
    s.wait_state("READY")
    c = client(s, timeout=10)
    for _ in range(3):
        with pytest.raises(anthropic.APIStatusError) as failed:
            ask(c, "[script:error500]")
        assert failed.value.status_code >= 500
    stats = httpx.get(f"http://127.0.0.1:{s.port}/_stats").json()
    assert stats["requests"] == 3

    started = time.monotonic()
    with pytest.raises(anthropic.APIStatusError) as refused:
        ask(c, "[script:error500]")
    assert refused.value.status_code == 529
    assert float(refused.value.response.headers["retry-after"]) >= 1
    assert time.monotonic() - started < 0.5, "an open breaker must answer at once"
    assert httpx.get(f"http://127.0.0.1:{s.port}/_stats").json()["requests"] == 3, "the backend was touched"

    record = s.record()
    assert record is not None and record["breaker"]["state"] == "open"

    # After the reset timeout one probe goes through; it succeeds and closes the circuit.
    good = client(s, timeout=10)
    wait_until(lambda: _try(good), 5, interval=0.1, what="the half-open probe to be allowed")
    assert httpx.get(f"http://127.0.0.1:{s.port}/_stats").json()["requests"] == 4
    wait_until(lambda: (s.record() or {})["breaker"]["state"] == "closed", 5)
    assert ask(good) == "Hello world"


def _try(c: anthropic.Anthropic) -> bool:
    try:
        return ask(c) == "Hello world"
    except anthropic.APIStatusError as exc:
        assert exc.status_code == 529
        return False


def test_client_errors_never_open_the_breaker(serve: StartServe) -> None:
    s = serve({**scripted_entry(), "breakerFailures": 2})
    s.wait_state("READY")
    bad = httpx.Client(base_url=s.proxy_url, timeout=10)
    for _ in range(4):
        assert bad.post("/v1/messages", content=b"{not json").status_code == 400
    assert ask(client(s)) == "Hello world"
    assert (s.record() or {})["breaker"]["state"] == "closed"


def test_embedded_mlx_server_streams_through_the_proxy_in_process(serve: StartServe, tiny_model: Path) -> None:
    port = free_port()
    s = serve({"type": "mlx-server", "embedded": True, "model": str(tiny_model), "port": port, "command": None})
    wait_until(lambda: "Serving the Anthropic API" in s.text(), 60, what="the embedded server")
    c = client(s, timeout=60)
    deltas = []
    with c.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=6,
        # Greedy on this prompt gives whole words; on "hello" it gives bytes of no character, which are held back.
        messages=[{"role": "user", "content": "Say something"}],
        extra_body={"temperature": 0.0},  # greedy: the same tokens every run
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                deltas.append(event)
        final = stream.get_final_message()
    # A random model may pick its end token early; it can never run past max_tokens.
    assert 2 <= final.usage.output_tokens <= 6
    assert final.stop_reason == ("max_tokens" if final.usage.output_tokens == 6 else "end_turn")
    assert len(deltas) >= 2, "the embedded backend must stream, not answer in one piece"
    assert (s.record() or {}).get("pid") is None, "nothing is spawned for an embedded backend"


def test_breaker_opens_on_failing_requests_while_health_answers(serve: StartServe) -> None:
    """Liveness probes that pass between failed requests must not wipe the requests' evidence."""
    s = serve({**scripted_entry(), "breakerFailures": 3, "breakerResetTimeout": 30000, "healthInterval": 100})
    s.wait_state("READY")
    c = client(s, timeout=10)
    stats = f"http://127.0.0.1:{s.port}/_stats"
    for _ in range(3):
        probes = httpx.get(stats).json()["health"]
        with pytest.raises(anthropic.APIStatusError) as failed:
            ask(c, "[script:error500]")
        assert failed.value.status_code == 500
        wait_until(lambda probes=probes: httpx.get(stats).json()["health"] >= probes + 2, 10, what="passing probes")
    with pytest.raises(anthropic.APIStatusError) as refused:
        ask(c, "[script:error500]")
    assert refused.value.status_code == 529, "three failed requests in a row must open the breaker"
    assert httpx.get(stats).json()["requests"] == 3


def test_request_waiting_for_a_backend_that_never_starts_gets_an_anthropic_error(tmp_path: Path) -> None:
    """Whatever ends the wait (here: serve gives up on a crash-looping backend), the answer is JSON in the
    Anthropic error shape naming the cause, never the server's plain-text 500."""
    from tests.harness import fault_command, launch_serve, write_config

    port, proxy = free_port(), free_port()
    entry = {
        "command": fault_command("--no-listen", "--exit-after", "1.0"),
        "port": port,
        "maxRestarts": 1,
        "restartDelay": 100,
    }
    config = write_config(tmp_path / ".anyclauderc.json", {"x": entry}, backend="x", port=proxy)
    s = launch_serve(config, "x", tmp_path / "marks", port)
    try:

        def connectable() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", proxy)) == 0

        wait_until(connectable, 20, what="the proxy to listen")
        body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(f"http://127.0.0.1:{proxy}/v1/messages", json=body, timeout=60)
        assert reply.headers["content-type"].startswith("application/json"), reply.text
        error = reply.json()
        assert reply.status_code >= 500 and error["type"] == "error", error
        assert "x" in error["error"]["message"], error
        assert s.wait_exit(timeout=30) == 3
    finally:
        s.close()


def test_request_waiting_for_a_starting_backend_gets_an_anthropic_error_when_serve_stops(tmp_path: Path) -> None:
    """serve is stopped while a request waits for the backend to come up: the request must end with an
    Anthropic-shaped error naming the cause, not uvicorn's text/plain 500 from a cancelled task."""
    import threading

    import psutil

    from tests.harness import fault_command, launch_serve, write_config

    port, proxy = free_port(), free_port()
    entry = {"command": fault_command("--ready-after", "120"), "port": port, "startupTimeout": 120000}
    config = write_config(tmp_path / ".anyclauderc.json", {"x": entry}, backend="x", port=proxy)
    s = launch_serve(config, "x", tmp_path / "marks", port)
    replies: list[httpx.Response | BaseException] = []

    def send() -> None:
        body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        try:
            replies.append(httpx.post(f"http://127.0.0.1:{proxy}/v1/messages", json=body, timeout=60))
        except Exception as exc:  # the result the test looks at
            replies.append(exc)

    try:

        def waiting() -> bool:
            conns = psutil.Process(s.proc.pid).net_connections()
            return any(c.laddr.port == proxy and c.status == psutil.CONN_ESTABLISHED for c in conns)

        s.wait_state("STARTING")
        wait_until(lambda: "Starting x" in s.text(), 20, what="the proxy to listen")
        sender = threading.Thread(target=send)
        sender.start()
        wait_until(waiting, 10, what="the request to reach the proxy")
        s.proc.send_signal(signal.SIGTERM)
        sender.join(30)
        assert len(replies) == 1 and isinstance(replies[0], httpx.Response), replies
        reply = replies[0]
        assert reply.headers["content-type"].startswith("application/json"), (reply.status_code, reply.text)
        error = reply.json()
        assert reply.status_code >= 500 and error["type"] == "error", error
        assert "stopping" in error["error"]["message"], error
        s.wait_exit(timeout=30)
    finally:
        s.close()


def test_context_length_of_a_command_backend_refuses_a_prompt_that_cannot_fit(
    serve: StartServe, tmp_path: Path
) -> None:
    """`contextLength` on any kind (here `command`) serving a local model folder: the prompt is counted with the
    folder's tokenizer and refused as "prompt is too long" (what makes Claude Code compact), never forwarded."""
    from tests.tiny_model import _write_tokenizer

    folder = tmp_path / "model"
    _write_tokenizer(folder, 358, 512)
    s = serve({**scripted_entry(), "contextLength": 200, "model": str(folder)})
    s.wait_state("READY")
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(client(s), "word " * 2000)
    assert "prompt is too long" in refused.value.message
    assert httpx.get(f"http://127.0.0.1:{s.port}/_stats").json()["requests"] == 0, "it must not be forwarded"
    assert ask(client(s), "short") == "Hello world"


def test_a_prompt_only_estimated_past_the_context_goes_to_the_backend(serve: StartServe) -> None:
    """Without a tokenizer the size is a guess from the body's bytes: the backend's own limit decides."""
    s = serve({**scripted_entry(), "contextLength": 200})
    s.wait_state("READY")
    assert ask(client(s), "word " * 2000) == "Hello world"
