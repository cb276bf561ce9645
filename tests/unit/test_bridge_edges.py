"""Small pieces of the bridge: cache hygiene, Host parsing, backend error mapping, SSE reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from launcher.bridge.failures import backend_status_error
from launcher.bridge.guard import host_name
from launcher.bridge.hygiene import strip_billing_header
from launcher.bridge.passthrough import upstream_url
from launcher.bridge.sse import Comment, OpenAIEvents, TornStream, encode, iter_lines


def test_billing_line_is_removed_from_blocks_and_strings() -> None:
    blocks = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.a1f; cc_entrypoint=cli;"}]
    blocks.append({"type": "text", "text": "You are Claude Code."})
    assert strip_billing_header(blocks) == [{"type": "text", "text": "You are Claude Code."}]
    assert strip_billing_header("x-anthropic-billing-header: a;\nRules.") == "Rules."
    assert strip_billing_header("plain") == "plain"


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:49152", "localhost"), ("127.0.0.1", "127.0.0.1"), ("[::1]:80", "::1"), ("Evil.com:1", "evil.com")],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_backend_errors_map_to_anthropic_statuses() -> None:
    llama = b'{"error": {"code": 400, "message": "request exceeds context", "type": "exceed_context_size_error",'
    llama += b' "n_prompt_tokens": 9000, "n_ctx": 8192}}'
    assert backend_status_error(400, llama, None, 1).message == "prompt is too long: 9000 tokens > 8192 maximum"
    assert backend_status_error(500, b"oops", None, 1).status == 500
    overloaded = backend_status_error(503, b"{}", None, 1)
    assert (overloaded.status, overloaded.error_type, overloaded.headers()) == (
        529,
        "overloaded_error",
        {"retry-after": "2"},
    )
    assert backend_status_error(422, b'{"detail": "bad"}', None, 1).status == 400


async def _lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def _collect(events: OpenAIEvents) -> list[dict[str, object] | Comment]:
    return [e async for e in events]


def test_sse_reader_handles_spacing_done_and_torn_events() -> None:
    events = OpenAIEvents(_lines('data:{"a":1}', "", ": comment", 'data: {"b":2}', "", "data: [DONE]", "", "junk"))
    assert asyncio.run(_collect(events)) == [{"a": 1}, Comment("comment"), {"b": 2}]
    assert events.done
    with pytest.raises(TornStream):
        asyncio.run(_collect(OpenAIEvents(_lines('data: {"a":', ""))))


def test_every_event_has_an_event_line() -> None:
    assert encode({"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_stream_with_raw_line_separator_in_content_is_not_torn() -> None:
    """A backend writing U+2028/U+0085 raw inside a JSON string (ensure_ascii=False) must not split the event."""
    event = 'data: {"choices": [{"delta": {"content": "a\u2028b\u0085c\u000bd"}}]}\n\n'.encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(event), 7):  # split mid-character too
            yield event[i : i + 7]

    async def collect() -> list[str]:
        return [line async for line in iter_lines(chunks())]

    lines = asyncio.run(collect())
    assert lines[0] == 'data: {"choices": [{"delta": {"content": "a\u2028b\u0085c\u000bd"}}]}'
    assert lines[1:] == [""]


def test_prefill_report_is_read_from_a_comment_line() -> None:
    report = Comment('prefill {"prompt_tokens": 3000, "cached_tokens": 1024, "processed": 1536}').prefill()
    assert report == {"prompt_tokens": 3000, "cached_tokens": 1024, "processed": 1536}
    assert Comment("keep-alive").prefill() is None and Comment("prefill {torn").prefill() is None


@pytest.mark.parametrize(
    ("base", "path", "query", "url"),
    [
        ("http://127.0.0.1:8080", "/v1/messages", "", "http://127.0.0.1:8080/v1/messages"),  # llama-cpp
        ("http://127.0.0.1:8080/v1", "/v1/messages", "beta=true", "http://127.0.0.1:8080/v1/messages?beta=true"),
        (
            "https://api.anthropic.com/",
            "/v1/messages/count_tokens",
            "",
            "https://api.anthropic.com/v1/messages/count_tokens",
        ),
        ("https://api.anthropic.com/v1/", "/v1/messages", "", "https://api.anthropic.com/v1/messages"),
        ("https://gateway.example/anthropic", "/v1/messages", "", "https://gateway.example/anthropic/v1/messages"),
    ],
)
def test_pass_through_url_join_never_doubles_v1(base: str, path: str, query: str, url: str) -> None:
    assert upstream_url(base, path, query) == url
