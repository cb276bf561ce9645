"""What the bridge refuses and what it lets through, case by case (docs/reliability.md 17): strict where the
Messages API is strict, lenient only where Claude Code's real traffic needs it. Also: the billing line wherever it is.
"""

from __future__ import annotations

from typing import Any

import pytest

from launcher.bridge.errors import ApiError
from launcher.bridge.hygiene import clean_anthropic_body
from launcher.bridge.models import parse_count_tokens_request, parse_messages_request
from launcher.bridge.request import translate_request

BILLING = "x-anthropic-billing-header: cc_version=2.1.197.e09; cc_entrypoint=cli;"


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return translate_request(parse_messages_request(body), None)


def base(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **extra}


def refused(body: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as caught:
        translate(body)
    assert caught.value.status == 400 and caught.value.error_type == "invalid_request_error"
    return caught.value.message


# ----- the billing line


@pytest.mark.parametrize(
    "content",
    [f"{BILLING}\nAvailable agents: a, b", [{"type": "text", "text": BILLING}, {"type": "text", "text": "Available"}]],
)
def test_billing_line_is_stripped_from_a_mid_conversation_system_message(content: Any) -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": content},
        {"role": "user", "content": "second"},
    ]
    out = translate(base(messages=messages))
    assert "x-anthropic-billing-header" not in str(out["messages"])
    assert "Available" in out["messages"][-1]["content"]
    relayed = clean_anthropic_body(base(messages=messages), None)
    assert "x-anthropic-billing-header" not in str(relayed["messages"])
    assert "Available" in str(relayed["messages"][2]["content"])


# ----- strict where the API is


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "100"),
        ("max_tokens", True),
        ("max_tokens", 0),
        ("stream", "true"),
        ("temperature", "0.5"),
        ("top_k", "5"),
        ("stop_sequences", [1]),
    ],
)
def test_wrong_types_are_refused_not_coerced(field: str, value: Any) -> None:
    assert field in refused(base(**{field: value}))


def test_empty_messages_are_refused() -> None:
    assert "messages" in refused(base(messages=[]))
    with pytest.raises(ApiError):
        parse_count_tokens_request({"model": "m", "messages": []})


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled"},
        {"type": "enabled", "budget_tokens": 500},
        {"type": "enabled", "budget_tokens": 4000},  # not below max_tokens (2000)
        {"type": "enabled", "budget_tokens": "2000"},
        {"budget_tokens": 1500},
        {"type": 1},
    ],
)
def test_invalid_thinking_configs_are_refused(thinking: dict[str, Any]) -> None:
    assert "thinking" in refused(base(max_tokens=2000, thinking=thinking))


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled", "budget_tokens": 1999},
        {"type": "disabled"},
        {"type": "adaptive"},  # what Claude Code 2.1.197 sends
        {"type": "adaptive", "display": "summarized"},
        {"type": "a-kind-from-a-newer-claude-code"},  # kept lenient: Claude Code adds kinds (adaptive came so)
    ],
)
def test_valid_and_newer_thinking_configs_pass(thinking: dict[str, Any]) -> None:
    assert translate(base(max_tokens=2000, thinking=thinking))["messages"]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "tool_use", "id": "", "name": "Read", "input": {}},
        {"type": "tool_use", "id": "toolu_1", "name": "", "input": {}},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": "not an object"},
    ],
)
def test_malformed_tool_use_in_history_is_refused(block: dict[str, Any]) -> None:
    assert "tool_use" in refused(
        base(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": [block]}])
    )


def test_empty_tool_names_and_result_ids_are_refused() -> None:
    assert "tools.0.name" in refused(base(tools=[{"name": "", "input_schema": {"type": "object"}}]))
    result = {"type": "tool_result", "tool_use_id": "", "content": "x"}
    assert "tool_use_id" in refused(base(messages=[{"role": "user", "content": [result]}]))


@pytest.mark.parametrize(
    ("where", "block"),
    [
        ("user", {"type": "future_block", "x": 1}),
        ("user", {"type": "tool_use", "id": "t", "name": "X", "input": {}}),  # a user cannot call tools
        ("assistant", {"type": "image", "source": {"type": "url", "url": "https://e.x/a.png"}}),
        ("assistant", {"type": "tool_result", "tool_use_id": "t", "content": "r"}),
        ("tool_result", {"type": "future_block"}),
    ],
)
def test_block_types_claude_code_never_sends_are_refused_by_name(where: str, block: dict[str, Any]) -> None:
    if where == "tool_result":
        messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [block]}]}]
    elif where == "assistant":
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": [block]}]
    else:
        messages = [{"role": "user", "content": [block]}]
    assert repr(block["type"]) in refused(base(messages=messages))


# ----- lenient where Claude Code needs it


def test_blocks_claude_code_sends_are_accepted() -> None:
    """Block types seen in Claude Code 2.1.197's requests, plus what a conversation begun on the real API holds
    when anyclaude swaps the backend underneath it (thinking, redacted thinking, server tool blocks)."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "q", "citations": [], "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "system", "content": "Available agent types: ..."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "text", "text": "a", "citations": None},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/x.png"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]}]},
        {
            "role": "user",
            "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}],
        },
    ]
    out = translate(base(messages=messages))["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "user"]


def test_tool_result_with_null_content_is_an_empty_result() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": None}]},
    ]
    assert translate(base(messages=messages))["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "",
    }


# ----- documents (Claude Code's Read tool sends a PDF as a base64 document block)


def _pdf(text: str | None) -> str:
    """A one-page PDF whose page shows `text` (None: a page with no text layer), base64."""
    import base64

    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode() if text is not None else b"0 0 m 10 10 l S"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return base64.b64encode(out).decode()


def pdf_block(text: str | None) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": _pdf(text)}}


def test_a_pdf_document_reaches_the_model_as_its_text() -> None:
    messages = [{"role": "user", "content": [pdf_block("Quarterly totals rose"), {"type": "text", "text": "Sum up."}]}]
    content = translate(base(messages=messages))["messages"][0]["content"]
    assert "Quarterly totals rose" in content and content.rstrip().endswith("Sum up.")
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [pdf_block("Inside a result")]}
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [result]},
    ]
    assert "Inside a result" in translate(base(messages=history))["messages"][-1]["content"]


@pytest.mark.parametrize(
    "block",
    [
        pdf_block(None),  # a scan: no text layer
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "bm90IGEgcGRm"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
    ],
)
def test_a_document_a_local_model_cannot_read_is_refused_not_dropped(block: dict[str, Any]) -> None:
    assert "messages.0.content.0" in refused(base(messages=[{"role": "user", "content": [block]}]))


# ----- sampling ranges and block contents the API refuses (Claude Code 2.1.197 sends none of these)


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 1.5), ("temperature", -0.1), ("top_p", 1.2), ("top_p", -0.5), ("top_k", -1)],
)
def test_sampling_values_out_of_the_api_range_are_refused(field: str, value: Any) -> None:
    assert field in refused(base(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", 0), ("temperature", 1), ("top_p", 0.0), ("top_p", 1.0), ("top_k", 0)]
)
def test_sampling_values_at_the_edges_of_the_range_pass(field: str, value: Any) -> None:
    assert translate(base(**{field: value}))[field] == value


def _with(*content: dict[str, Any], role: str = "user") -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "q"}] if role == "assistant" else []
    return base(messages=[*messages, {"role": role, "content": list(content)}])


def test_a_tool_use_without_input_is_refused() -> None:
    message = refused(_with({"type": "tool_use", "id": "toolu_1", "name": "Read"}, role="assistant"))
    assert "messages.1.content.0.input" in message


@pytest.mark.parametrize("role", ["user", "assistant"])
def test_an_empty_text_block_is_refused(role: str) -> None:
    message = refused(_with({"type": "text", "text": "x"}, {"type": "text", "text": ""}, role=role))
    assert "content.1.text" in message and "non-empty" in message


def test_an_empty_text_block_inside_a_tool_result_is_refused() -> None:
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": ""}]}
    assert "content.0.content.0.text" in refused(_with(result))


def _image(media_type: str, data: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


@pytest.mark.parametrize("media_type", ["image/bmp", "image/svg+xml", "application/pdf", "png"])
def test_an_image_with_a_media_type_the_api_does_not_take_is_refused(media_type: str) -> None:
    message = refused(_with(_image(media_type, "AAAA")))
    assert "media_type" in message and "image/png" in message


@pytest.mark.parametrize("data", ["not base64!", "AAA", "", "AA AA"])
def test_an_image_whose_data_is_not_base64_is_refused(data: str) -> None:
    assert "source.data" in refused(_with(_image("image/png", data)))


def test_an_image_in_a_tool_result_is_checked_too() -> None:
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [_image("image/png", "%%%%")]}
    assert "content.0.content.0.source.data" in refused(_with(result))


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png", "image/gif", "image/webp"])
def test_images_of_the_api_media_types_pass(media_type: str) -> None:
    out = translate(base(messages=[{"role": "user", "content": [_image(media_type, "iVBORw0KGgo=")]}]))
    assert out["messages"][0]["content"][0]["image_url"]["url"] == f"data:{media_type};base64,iVBORw0KGgo="
