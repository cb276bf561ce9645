"""Relaying to Anthropic-speaking backends: proxy A (api=anthropic, passthrough) in front of proxy B
(a real Anthropic-speaking server: ours, translating to the scripted backend), and the local
llama-server style relay that only strips the billing line and maps the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from adapters.base import ApiKind
from launcher.proxy import ProxyOptions, StaticGate, Upstream, create_proxy_app
from tests.scripted_backend import Backend, ServerThread, claude_code_body


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Backend, ServerThread, ServerThread, StaticGate]]:
    scripted = Backend()
    with ServerThread(scripted.app) as backend:
        b_upstream = Upstream(
            "scripted", backend.url + "/v1", ApiKind.OPENAI, tokenize_url=backend.url + "/v1/tokenize"
        )
        with ServerThread(create_proxy_app(StaticGate(b_upstream), ProxyOptions(api_key="b-key"))) as proxy_b:
            a_gate = StaticGate(Upstream("claude", proxy_b.url, ApiKind.ANTHROPIC, api_key="b-key", passthrough=True))
            with ServerThread(create_proxy_app(a_gate, ProxyOptions(api_key="a-key"))) as proxy_a:
                yield scripted, backend, proxy_a, a_gate


def test_create_and_stream_through_two_proxies(chain: tuple[Backend, ServerThread, ServerThread, StaticGate]) -> None:
    _, _, proxy_a, gate = chain
    client = anthropic.Anthropic(base_url=proxy_a.url, api_key="a-key", max_retries=0)
    message = client.messages.create(model="claude-x", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hello world"  # type: ignore[union-attr]
    with client.messages.stream(
        model="claude-x",
        max_tokens=9,
        tools=[{"name": "Read", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "[script:tools]"}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use", "tool_use"]
    count = client.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "hello"}])
    assert count.input_tokens > 0
    assert gate.reports[-3:] == [True, True, True]


def test_relayed_errors_keep_their_status(chain: tuple[Backend, ServerThread, ServerThread, StaticGate]) -> None:
    client = anthropic.Anthropic(base_url=chain[2].url, api_key="a-key", max_retries=0)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": "[script:error500]"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=chain[2].url, api_key="b-key", max_retries=0).messages.create(
            model="m", max_tokens=9, messages=[{"role": "user", "content": "hi"}]
        )


def test_local_anthropic_backend_gets_billing_line_stripped_and_model_mapped(
    chain: tuple[Backend, ServerThread, ServerThread, StaticGate],
) -> None:
    scripted, backend, _, _ = chain
    upstream = Upstream("llama", backend.url + "/anthropic", ApiKind.ANTHROPIC, model="qwen-gguf", api_key="up")
    with ServerThread(create_proxy_app(StaticGate(upstream), ProxyOptions())) as proxy:
        body = claude_code_body(stream=False)
        response = httpx.post(proxy.url + "/v1/messages?beta=true", json=body, headers={"x-api-key": "client"})
        assert response.status_code == 200 and response.json()["content"][0]["text"] == "relayed"
    assert scripted.last["model"] == "qwen-gguf"
    assert [b["text"][:20] for b in scripted.last["system"]] == ["You are Claude Code,", "You are an interacti"]
    assert scripted.last["system"][1]["cache_control"] == {"type": "ephemeral"}
    assert scripted.last["tools"] == body["tools"]
    assert scripted.last_headers["has-x-api-key"] == "True"


def test_a_local_anthropic_backend_errors_reach_the_client_in_anthropic_shape(
    chain: tuple[Backend, ServerThread, ServerThread, StaticGate],
) -> None:
    """llama-server answers errors on /v1/messages in OpenAI's shape, an image to a text-only model as a 500."""
    _, backend, _, _ = chain
    gate = StaticGate(Upstream("llama", backend.url + "/anthropic", ApiKind.ANTHROPIC))
    with ServerThread(create_proxy_app(gate, ProxyOptions())) as proxy:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(
                model="m", max_tokens=9, messages=[{"role": "user", "content": "[script:llama_image]"}]
            )
        assert caught.value.body == {  # type: ignore[comparison-overlap]
            "type": "error",
            "error": {"type": "invalid_request_error", "message": caught.value.body["error"]["message"]},  # type: ignore[index]
        }
        assert "does not accept images" in caught.value.message
        with pytest.raises(anthropic.BadRequestError, match=r"prompt is too long: 2031 tokens > 512 maximum"):
            client.messages.create(
                model="m", max_tokens=9, messages=[{"role": "user", "content": "[script:llama_context]"}]
            )
    assert gate.reports == [True, True]  # the request's fault: never counted against the backend


def test_documents_reach_a_local_anthropic_backend_as_text(
    chain: tuple[Backend, ServerThread, ServerThread, StaticGate],
) -> None:
    """llama-server drops document blocks without a word (measured: same prompt tokens with and without one)."""
    scripted, backend, _, _ = chain
    gate = StaticGate(Upstream("llama", backend.url + "/anthropic", ApiKind.ANTHROPIC))
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The code is 4417."}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [doc]}
    messages: list[Any] = [
        {"role": "user", "content": [doc, {"type": "text", "text": "What is the code?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [result]},
    ]
    with ServerThread(create_proxy_app(gate, ProxyOptions())) as proxy:
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        client.messages.create(model="m", max_tokens=9, messages=messages)
    sent = scripted.last["messages"]
    assert sent[0]["content"][0] == {"type": "text", "text": "The code is 4417."}
    assert sent[2]["content"][0]["content"] == [{"type": "text", "text": "The code is 4417."}]
    assert "document" not in str(sent)
