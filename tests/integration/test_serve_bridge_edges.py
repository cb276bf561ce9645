"""Backend quirks outside checks found, through a real `anyclaude serve` and read with the official SDK, streamed
and not: tool-call fragments whose id changes or that carry neither index nor id, reasoning after a call, a reply
cut inside a character, a stop sequence left in the text; and the requests the API refuses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.harness import Serve, scripted_entry, serves, start_serve

StartServe = Callable[..., Serve]

TOOLS: list[Any] = [{"name": name, "input_schema": {"type": "object"}} for name in ("Read", "Grep", "Bash")]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name="local", **kwargs)) as start:
        yield start


def both(client: anthropic.Anthropic, script: str, **extra: Any) -> list[Any]:
    """The answer to one scripted request, non-streamed and through `messages.stream()`."""
    request: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": f"[script:{script}]"}],
        **extra,
    }
    created = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        streamed = stream.get_final_message()
    return [created, streamed]


def calls(message: Any) -> list[tuple[str, Any]]:
    return [(block.name, block.input) for block in message.content if block.type == "tool_use"]


def test_backend_quirks_reach_the_sdk_as_the_api_would_send_them(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY", 30)
    client = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=30)

    for script in ("changing_id", "changing_id_no_index"):  # item 1: the id changes partway through a call
        for message in both(client, script):
            assert calls(message) == [("Bash", {"command": "ls -l"})], script
            assert message.stop_reason == "tool_use"

    for script in ("anonymous_calls", "shared_id"):  # item 2: no index and no id, or one id for two calls
        for message in both(client, script):
            assert calls(message) == [("Read", {"file_path": "/a"}), ("Grep", {"pattern": "x"})], script
            assert len({block.id for block in message.content if block.type == "tool_use"}) == 2

    for message in both(client, "think_after_call"):  # item 3: reasoning after a call is kept
        assert [block.type for block in message.content] == ["thinking", "text", "thinking", "tool_use"]
        assert message.content[2].thinking == "Then more." and message.content[2].signature
        assert message.content[3].input == {"file_path": "/r"}

    for message in both(client, "cut_character"):  # item 4: no replacement character
        assert message.content[0].text == "Shine \N{GLOWING STAR}"
        assert message.stop_reason == "max_tokens"

    for message in both(client, "stop_left_in", stop_sequences=["END"]):  # item 5: the stop sequence is cut
        assert message.content[0].text == "one two "
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_requests_the_api_refuses_are_refused_in_its_shape(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY", 30)
    client = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=30)
    history: list[Any] = [{"role": "user", "content": "q"}]
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}
    bitmap = {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"extra_body": {"temperature": 1.5}}, "temperature"),
        ({"extra_body": {"top_p": 2.0}}, "top_p"),
        ({"extra_body": {"top_k": -1}}, "top_k"),
        (
            {"messages": [*history, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "R"}]}]},
            "messages.1.content.0.input",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "messages.0.content.0.text"),
        ({"messages": [{"role": "user", "content": [picture]}]}, "messages.0.content.0.source.data"),
        (
            {"messages": [{"role": "user", "content": [bitmap]}]},
            "messages.0.content.0.source.media_type",
        ),
    ]
    for stream in (False, True):
        for extra, where in cases:
            request: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": history, **extra}
            with pytest.raises(anthropic.BadRequestError) as caught:
                if stream:
                    with client.messages.stream(**request) as events:
                        events.get_final_message()
                else:
                    client.messages.create(**request)
            body: Any = caught.value.body
            assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
            assert where in body["error"]["message"], body
