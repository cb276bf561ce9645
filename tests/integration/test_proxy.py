"""The proxy over real HTTP on 127.0.0.1, driven by the official `anthropic` SDK, in front of the
scripted backend. Every server runs in a thread with its own loop and is stopped at module end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from adapters.base import ApiKind
from launcher.proxy import BackendUnavailable, ProxyOptions, StaticGate, Upstream, create_proxy_app
from tests.scripted_backend import Backend, ServerThread, claude_code_body

TOOLS = [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[Backend, ServerThread]]:
    scripted = Backend(delay=0.6)
    with ServerThread(scripted.app) as thread:
        yield scripted, thread


def start_proxy(upstream: Upstream, gate: Any = None, **options: Any) -> tuple[ServerThread, Any]:
    gate = gate or StaticGate(upstream)
    options.setdefault("ping_interval", 0.2)
    thread = ServerThread(create_proxy_app(gate, ProxyOptions(**options))).start()
    return thread, gate


@pytest.fixture(scope="module")
def proxy(backend: tuple[Backend, ServerThread]) -> Iterator[tuple[ServerThread, StaticGate]]:
    upstream = Upstream(
        "scripted", backend[1].url + "/v1", ApiKind.OPENAI, model="local", tokenize_url=backend[1].url + "/v1/tokenize"
    )
    thread, gate = start_proxy(upstream, idle_timeout=0.5)
    yield thread, gate
    thread.stop()


@pytest.fixture
def client(proxy: tuple[ServerThread, StaticGate]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy[0].url, api_key="any", max_retries=0)


def ask(client: anthropic.Anthropic, text: str, **kwargs: Any) -> Any:
    return client.messages.create(
        model="claude-local-1", max_tokens=50, messages=[{"role": "user", "content": text}], **kwargs
    )


def test_create_returns_the_assembled_message(client: anthropic.Anthropic) -> None:
    message = ask(client, "hi")
    assert message.content[0].type == "text" and message.content[0].text == "Hello world"
    assert message.model == "claude-local-1"
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 12, 2)


def test_stream_with_several_tool_uses(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-x", max_tokens=50, tools=TOOLS, messages=[{"role": "user", "content": "[script:tools]"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["Let me check."]
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use", "tool_use"]
    assert [b.input for b in final.content[1:]] == [{"file_path": "/tmp/a.txt"}, {"pattern": "TODO"}, {"command": "ls"}]
    assert final.stop_reason == "tool_use"


def test_claude_code_body_reaches_the_backend_translated(
    client: anthropic.Anthropic, backend: tuple[Backend, ServerThread]
) -> None:
    body = claude_code_body()
    response = httpx.post(
        str(client.base_url).rstrip("/") + "/v1/messages?beta=true", json=body, headers={"anthropic-beta": "x"}
    )
    assert response.status_code == 200
    assert "event: message_stop" in response.text
    sent = backend[0].last
    assert sent["model"] == "local"
    assert "x-anthropic-billing-header" not in sent["messages"][0]["content"]
    assert len(sent["tools"]) == 24 and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_leaked_tool_call_is_recovered(client: anthropic.Anthropic) -> None:
    message = ask(client, "[script:leak]", tools=TOOLS)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"file_path": "/tmp/x"}


def test_count_tokens_uses_the_backend_tokenizer(client: anthropic.Anthropic) -> None:
    result = client.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "hello"}])
    assert result.input_tokens == len('[{"role": "user", "content": "hello"}]') // 4


def test_pings_keep_a_slow_prefill_alive(proxy: tuple[ServerThread, StaticGate]) -> None:
    body = {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "[script:slow]"}]}
    for script in ("slow", "slow_headers"):
        body["messages"] = [{"role": "user", "content": f"[script:{script}]"}]
        text = httpx.post(proxy[0].url + "/v1/messages", json=body, timeout=10).text
        names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
        assert names[0] == "message_start" and names[1] == "ping", script
        assert names[-1] == "message_stop" and names.count("message_start") == 1


def test_backend_500_is_api_error_and_counts_as_failure(
    client: anthropic.Anthropic, proxy: tuple[ServerThread, StaticGate]
) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        ask(client, "[script:error500]")
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert proxy[1].reports[-1] is False


def test_backend_context_error_becomes_prompt_is_too_long(
    client: anthropic.Anthropic, proxy: tuple[ServerThread, StaticGate]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client, "[script:context]")
    assert caught.value.body["error"]["message"] == "prompt is too long: 5000 tokens > 4096 maximum"  # type: ignore[index]
    assert proxy[1].reports[-1] is True


def test_prompt_over_the_context_is_refused_before_generation(backend: tuple[Backend, ServerThread]) -> None:
    upstream = Upstream(
        "small",
        backend[1].url + "/v1",
        ApiKind.OPENAI,
        context_length=1000,
        tokenize_url=backend[1].url + "/v1/tokenize",
    )
    thread, _ = start_proxy(upstream)
    try:
        before = backend[0].requests
        client = anthropic.Anthropic(base_url=thread.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match=r"prompt is too long: \d+ tokens > 1000 maximum"):
            ask(client, "word " * 3000)
        assert backend[0].requests == before
        ask(client, "short")
        assert backend[0].last["max_tokens"] <= 50
    finally:
        thread.stop()


def test_mid_stream_drop_is_an_error_event_and_the_proxy_keeps_serving(
    client: anthropic.Anthropic, proxy: tuple[ServerThread, StaticGate]
) -> None:
    with (
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "[script:drop]"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert proxy[1].reports[-1] is False
    text = httpx.post(
        proxy[0].url + "/v1/messages",
        json={
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "[script:drop]"}],
        },
    ).text
    assert text.rstrip().splitlines()[-2:][0] == "event: error"
    assert '"type":"api_error"' in text
    assert ask(client, "hi").content[0].text == "Hello world"


def test_idle_backend_times_out_with_an_error_event(
    client: anthropic.Anthropic, proxy: tuple[ServerThread, StaticGate], backend: tuple[Backend, ServerThread]
) -> None:
    with (
        pytest.raises(anthropic.APIError, match="sent nothing"),
        client.messages.stream(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "[script:hang]"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert proxy[1].reports[-1] is False


def test_non_stream_from_a_json_only_backend(client: anthropic.Anthropic) -> None:
    assert ask(client, "[script:json]").content[0].text == "whole"  # type: ignore[union-attr]


def test_bad_requests_get_anthropic_errors(proxy: tuple[ServerThread, StaticGate]) -> None:
    url = proxy[0].url
    cases = [
        (httpx.post(url + "/v1/messages", content=b"{not json"), 400, "invalid_request_error"),
        (httpx.post(url + "/v1/messages", json={"model": "m"}), 400, "invalid_request_error"),
        (httpx.post(url + "/v1/messages", json=[1, 2]), 400, "invalid_request_error"),
        (httpx.get(url + "/v2/nothing"), 404, "not_found_error"),
        (httpx.get(url + "/v1/messages"), 405, "invalid_request_error"),
        (httpx.get(url + "/", headers={"host": "evil.example:80"}), 403, "permission_error"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status, response.text
        assert response.json() == {
            "type": "error",
            "error": {"type": kind, "message": response.json()["error"]["message"]},
        }


def test_head_root_and_health(proxy: tuple[ServerThread, StaticGate]) -> None:
    assert httpx.head(proxy[0].url + "/").status_code == 200
    assert httpx.get(proxy[0].url + "/", headers={"host": "[::1]:9"}).status_code == 200
    health = httpx.get(proxy[0].url + "/health").json()
    assert health["state"] == "READY" and health["breaker"] == "closed"
    assert httpx.get(proxy[0].url + "/v1/models").json()["data"]


def test_api_key_is_required_when_configured(backend: tuple[Backend, ServerThread]) -> None:
    thread, _ = start_proxy(Upstream("s", backend[1].url + "/v1", ApiKind.OPENAI), api_key="sekrit")
    try:
        with pytest.raises(anthropic.AuthenticationError):
            ask(anthropic.Anthropic(base_url=thread.url, api_key="wrong", max_retries=0), "hi")
        assert ask(anthropic.Anthropic(base_url=thread.url, api_key="sekrit", max_retries=0), "hi").content
        bearer = anthropic.Anthropic(base_url=thread.url, auth_token="sekrit", max_retries=0)
        assert ask(bearer, "hi").content
        assert httpx.head(thread.url + "/").status_code == 200  # Claude Code's start-up probe carries no key
    finally:
        thread.stop()


def test_oversized_body_is_413(backend: tuple[Backend, ServerThread]) -> None:
    thread, _ = start_proxy(Upstream("s", backend[1].url + "/v1", ApiKind.OPENAI), max_body_bytes=1000)
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:
            ask(anthropic.Anthropic(base_url=thread.url, api_key="k", max_retries=0), "x" * 2000)
        assert caught.value.status_code == 413
        assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    finally:
        thread.stop()


class DownGate:
    def __init__(self) -> None:
        self.reports: list[bool] = []

    async def acquire(self) -> Upstream:
        raise BackendUnavailable("backend mlx is restarting (circuit open)", retry_after=7.2)

    def report(self, ok: bool) -> None:
        self.reports.append(ok)

    def snapshot(self) -> dict[str, Any]:
        return {"state": "BACKOFF", "breaker": "open"}


def test_unavailable_backend_is_529_with_retry_after(backend: tuple[Backend, ServerThread]) -> None:
    gate = DownGate()
    thread, _ = start_proxy(Upstream("s", "http://127.0.0.1:9/v1", ApiKind.OPENAI), gate=gate)
    try:
        with pytest.raises(anthropic.OverloadedError) as caught:
            ask(anthropic.Anthropic(base_url=thread.url, api_key="k", max_retries=0), "hi")
        assert caught.value.response.headers["retry-after"] == "8"
        assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert gate.reports == []
    finally:
        thread.stop()


def test_unreachable_backend_is_529_and_reported(unused_port: int) -> None:
    thread, gate = start_proxy(Upstream("gone", f"http://127.0.0.1:{unused_port}/v1", ApiKind.OPENAI))
    try:
        for stream in (False, True):
            body = {"model": "m", "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(thread.url + "/v1/messages", json=body)
            assert response.status_code == 529 and "retry-after" in response.headers
        assert gate.reports == [False, False]
    finally:
        thread.stop()


def test_client_disconnect_cancels_the_upstream_request(backend: tuple[Backend, ServerThread]) -> None:
    thread, _ = start_proxy(Upstream("s", backend[1].url + "/v1", ApiKind.OPENAI))
    try:
        body = {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "[script:hang]"}],
        }
        with httpx.stream("POST", thread.url + "/v1/messages", json=body) as response:
            # Keep the iterator referenced: dropping it would close the connection before the check below.
            lines = response.iter_lines()
            for line in lines:
                if "text_delta" in line:
                    break
            wait_for(lambda: backend[0].active == 1)
        wait_for(lambda: backend[0].active == 0)
        del lines
    finally:
        thread.stop()


def test_backend_connection_is_kept_alive_and_dropped_after_a_disconnect(backend: tuple[Backend, ServerThread]) -> None:
    thread, _ = start_proxy(Upstream("s", backend[1].url + "/v1", ApiKind.OPENAI))
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with httpx.Client(base_url=thread.url) as http:
            for stream in (False, True, False):
                assert http.post("/v1/messages", json={**body, "stream": stream}).status_code == 200
            kept = backend[0].peers[-3:]
            assert kept[0] == kept[1] == kept[2], kept  # one keep-alive connection to the backend
            hang = {**body, "stream": True, "messages": [{"role": "user", "content": "[script:hang]"}]}
            with http.stream("POST", "/v1/messages", json=hang) as response:
                lines = response.iter_lines()
                next(line for line in lines if "text_delta" in line)
                wait_for(lambda: backend[0].active == 1)
            wait_for(lambda: backend[0].active == 0)
            del lines
            assert http.post("/v1/messages", json=body).status_code == 200
        # The half-read answer's connection was closed, not handed to the next request.
        assert backend[0].peers[-1] != backend[0].peers[-2]
    finally:
        thread.stop()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
