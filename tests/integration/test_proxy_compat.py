"""Anthropic compatibility of the bridge, seen through the official `anthropic` SDK: every answer must parse with
`messages.create` and `messages.stream`, and both must agree. The scripted backend plays each upstream quirk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from adapters.base import ApiKind
from launcher.proxy import ProxyOptions, StaticGate, Upstream, create_proxy_app
from tests.scripted_backend import Backend, ServerThread

TOOLS = [
    {"name": "Read", "input_schema": {"type": "object"}},
    {"name": "Grep", "input_schema": {"type": "object"}},
    {"name": "Bash", "input_schema": {"type": "object"}},
]


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[Backend, ServerThread]]:
    scripted = Backend(delay=0.6)
    with ServerThread(scripted.app) as thread:
        yield scripted, thread


@pytest.fixture(scope="module")
def proxy(backend: tuple[Backend, ServerThread]) -> Iterator[ServerThread]:
    upstream = Upstream("scripted", backend[1].url + "/v1", ApiKind.OPENAI, model="local")
    with ServerThread(create_proxy_app(StaticGate(upstream), ProxyOptions(ping_interval=0.2))) as thread:
        yield thread


@pytest.fixture
def client(proxy: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="any", max_retries=0)


def both(client: anthropic.Anthropic, script: str, **kwargs: Any) -> tuple[Any, Any]:
    """The same request answered non-streamed and through the SDK's stream helper."""
    request: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 50,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": f"[script:{script}]"}],
        **kwargs,
    }
    created = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        streamed = stream.get_final_message()
    return created, streamed


def blocks(message: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for block in message.content:
        if block.type == "tool_use":
            out.append(("tool_use", block.id, block.name, block.input))
        elif block.type == "text":
            out.append(("text", block.text))
        else:
            out.append((block.type,))
    return out


def test_parallel_calls_sharing_one_index_stay_apart(client: anthropic.Anthropic) -> None:
    for message in both(client, "same_index"):
        assert blocks(message) == [
            ("tool_use", "call_a", "Read", {"file_path": "/a"}),
            ("tool_use", "call_b", "Grep", {"pattern": "x"}),
        ]
        assert message.stop_reason == "tool_use"


def test_calls_without_index_are_told_apart_by_id(client: anthropic.Anthropic) -> None:
    for message in both(client, "no_index"):
        assert blocks(message) == [
            ("tool_use", "call_a", "Read", {"file_path": "/a"}),
            ("tool_use", "call_b", "Grep", {"pattern": "x"}),
        ]


def test_invalid_tool_arguments_never_break_the_answer(client: anthropic.Anthropic) -> None:
    created, streamed = both(client, "bad_args")
    assert blocks(created) == blocks(streamed)
    calls = [b for b in blocks(created) if b[0] == "tool_use"]
    assert calls == [
        ("tool_use", "call_a", "Read", {"file_path": "/a"}),  # a missing closer is repaired
        ("tool_use", "call_b", "Bash", {}),  # not repairable: {} and the raw text shown
        ("tool_use", "call_c", "Grep", {"pattern": "ok"}),
    ]
    shown = " ".join(b[1] for b in blocks(created) if b[0] == "text")
    assert "{command: ls}" in shown and "Bash" in shown


def test_thinking_is_signed_and_text_keeps_its_place_before_the_call(client: anthropic.Anthropic) -> None:
    for message in both(client, "think_then_call"):
        assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
        thinking = message.content[0]
        assert thinking.thinking == "I should read it." and thinking.signature
        assert message.content[1].text == "Reading."
        assert message.content[2].input == {"file_path": "/r"}


# ----- message_start usage, session headers, timing before the first token


def test_message_start_usage_has_the_final_split(client: anthropic.Anthropic) -> None:
    def usages(script: str) -> tuple[Any, Any]:
        events = list(
            client.messages.create(
                model="m", max_tokens=9, stream=True, messages=[{"role": "user", "content": f"[script:{script}]"}]
            )
        )
        start = next(e for e in events if e.type == "message_start")
        final = next(e for e in events if e.type == "message_delta")
        return start.message.usage, final.usage

    start, final = usages("prefill_quiet")  # the backend reports its prefill before the first chunk
    assert (start.input_tokens, start.cache_read_input_tokens, start.cache_creation_input_tokens) == (100, 900, 0)
    assert (final.input_tokens, final.cache_read_input_tokens, final.cache_creation_input_tokens) == (100, 900, 0)
    start, final = usages("text")  # no report: the estimate, with the cache fields present
    assert (start.cache_read_input_tokens, start.cache_creation_input_tokens) == (0, 0)
    assert (final.input_tokens, final.cache_read_input_tokens, final.cache_creation_input_tokens) == (12, 0, 0)


SESSION = {
    "x-claude-code-session-id": "5e55-1",
    "x-claude-code-agent-id": "agent-7",
    "x-claude-code-parent-agent-id": "agent-0",
}


def test_claude_code_session_headers_reach_an_openai_backend(
    client: anthropic.Anthropic, backend: tuple[Backend, ServerThread]
) -> None:
    for stream in (False, True):
        backend[0].last_headers = {}
        request: dict[str, Any] = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            with client.messages.stream(**request, extra_headers=SESSION) as answer:
                answer.get_final_message()
        else:
            client.messages.create(**request, extra_headers=SESSION)
        assert {k: backend[0].last_headers.get(k) for k in SESSION} == SESSION


def test_claude_code_session_headers_reach_an_anthropic_backend(backend: tuple[Backend, ServerThread]) -> None:
    upstream = Upstream("llama", backend[1].url + "/anthropic", ApiKind.ANTHROPIC)
    with ServerThread(create_proxy_app(StaticGate(upstream), ProxyOptions())) as proxy:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        client.messages.create(
            model="m", max_tokens=9, messages=[{"role": "user", "content": "hi"}], extra_headers=SESSION
        )
    assert {k: backend[0].last_headers.get(k) for k in SESSION} == SESSION


def timing_proxy(backend: tuple[Backend, ServerThread], **options: float) -> ServerThread:
    upstream = Upstream("scripted", backend[1].url + "/v1", ApiKind.OPENAI)
    return ServerThread(create_proxy_app(StaticGate(upstream), ProxyOptions(**options))).start()


def event_names(proxy: ServerThread, script: str) -> list[str]:
    body = {
        "model": "m",
        "max_tokens": 9,
        "stream": True,
        "messages": [{"role": "user", "content": f"[script:{script}]"}],
    }
    text = httpx.post(proxy.url + "/v1/messages", json=body, timeout=30).text
    return [line[7:] for line in text.splitlines() if line.startswith("event: ")]


def test_a_long_prefill_is_not_cut_by_the_idle_timeout(backend: tuple[Backend, ServerThread]) -> None:
    # The backend: a role-only chunk, then 0.6 s of silence before the first token; idle timeout 0.2 s.
    proxy = timing_proxy(backend, ping_interval=0.1, idle_timeout=0.2, first_byte_timeout=5.0)
    try:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        names = event_names(proxy, "prefill_quiet")  # the SDK hides pings: read the wire
        first_block = names.index("content_block_start")
        assert names[0] == "message_start" and "ping" in names[1:first_block]  # the client is kept alive
        with client.messages.stream(
            model="m", max_tokens=9, messages=[{"role": "user", "content": "[script:prefill_quiet]"}]
        ) as stream:
            assert stream.get_final_text() == "Hello world"
    finally:
        proxy.stop()


def test_prefill_reports_keep_a_slow_prefill_alive_past_the_first_byte_timeout(
    backend: tuple[Backend, ServerThread],
) -> None:
    # 1.8 s of prefill reported every 0.1 s, against a first-byte timeout of 1 s.
    proxy = timing_proxy(backend, ping_interval=0.2, idle_timeout=0.2, first_byte_timeout=1.0)
    try:
        names = event_names(proxy, "prefill_progress")
        assert names.count("ping") >= 3 and names[-1] == "message_stop"
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        with client.messages.stream(
            model="m", max_tokens=9, messages=[{"role": "user", "content": "[script:prefill_progress]"}]
        ) as stream:
            assert stream.get_final_text() == "Hello world"
    finally:
        proxy.stop()


def test_a_silent_backend_still_times_out_before_its_first_token(backend: tuple[Backend, ServerThread]) -> None:
    proxy = timing_proxy(backend, ping_interval=0.1, idle_timeout=5.0, first_byte_timeout=0.3)
    try:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        with (
            pytest.raises(anthropic.APIError, match="before its first token"),
            client.messages.stream(
                model="m", max_tokens=9, messages=[{"role": "user", "content": "[script:prefill_quiet]"}]
            ) as stream,
        ):
            stream.get_final_message()
    finally:
        proxy.stop()


# ----- models and request ids


def test_unknown_model_id_is_404_not_found(client: anthropic.Anthropic) -> None:
    assert client.models.retrieve("claude-sonnet-4-5").id == "claude-sonnet-4-5"  # what Claude Code asks for
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_every_response_carries_a_request_id(client: anthropic.Anthropic, proxy: ServerThread) -> None:
    raw = client.messages.with_raw_response.create(
        model="m", max_tokens=9, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["request-id"].startswith("req_")
    with client.messages.with_streaming_response.create(
        model="m", max_tokens=9, stream=True, messages=[{"role": "user", "content": "hi"}]
    ) as streamed:
        assert streamed.headers["request-id"].startswith("req_")
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=9, messages=[])
    assert caught.value.request_id and caught.value.request_id.startswith("req_")
    refused = httpx.get(proxy.url + "/v1/models", headers={"host": "evil.example"})  # refused before routing
    assert refused.status_code == 403 and refused.headers["request-id"].startswith("req_")
    assert raw.headers["request-id"] != streamed.headers["request-id"]


# ----- stop sequences and images


@pytest.mark.parametrize("script", ["stopseq", "stopseq_sglang"])
def test_the_stop_sequence_that_ended_the_text_is_reported(client: anthropic.Anthropic, script: str) -> None:
    for message in both(client, script, stop_sequences=["END", "STOP"]):
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


PICTURE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def test_an_image_refused_by_the_backend_is_an_invalid_request(client: anthropic.Anthropic) -> None:
    content = [PICTURE, {"type": "text", "text": "[script:novision] what is this?"}]
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as caught:
            if stream:
                with client.messages.stream(
                    model="m", max_tokens=9, messages=[{"role": "user", "content": content}]
                ) as answer:
                    answer.get_final_message()
            else:
                client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": content}])
        assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "does not accept images" in caught.value.body["error"]["message"]  # type: ignore[index]


def test_images_for_a_text_only_model_are_refused_before_the_backend(backend: tuple[Backend, ServerThread]) -> None:
    upstream = Upstream("mlx-lm", backend[1].url + "/v1", ApiKind.OPENAI, accepts_images=False)
    gate = StaticGate(upstream)
    with ServerThread(create_proxy_app(gate, ProxyOptions())) as proxy:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        before = backend[0].requests
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [PICTURE]}
        messages: list[Any] = [
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [result]},
        ]
        with pytest.raises(anthropic.BadRequestError, match="does not accept images"):
            client.messages.create(model="m", max_tokens=9, messages=messages)
        assert backend[0].requests == before
        # The refusal still reports its permit (a client error): a half-open breaker's one trial must come back.
        assert gate.reports == [True]
        assert client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": "hi"}]).content
