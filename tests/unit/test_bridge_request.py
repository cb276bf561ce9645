"""Golden tests: the exact OpenAI request produced for representative Anthropic requests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from launcher.bridge.codec import dumps
from launcher.bridge.errors import ApiError
from launcher.bridge.models import parse_messages_request
from launcher.bridge.request import translate_request
from tests.scripted_backend import claude_code_body


def translate(body: dict[str, Any], model: str | None = None, max_tokens: int | None = None) -> dict[str, Any]:
    return translate_request(parse_messages_request(body), model, max_tokens)


def base(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_minimal_request_translates_to_streaming_chat_body() -> None:
    assert translate(base(), model="local") == {
        "model": "local",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_no_model_name_is_sent_when_the_backend_takes_none() -> None:
    assert "model" not in translate(base())


def test_sampling_stop_and_system_string() -> None:
    body = translate(base(system="Be brief.", temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["END"]))
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (body["temperature"], body["top_p"], body["top_k"], body["stop"]) == (0.2, 0.9, 40, ["END"])


def test_tool_use_and_results_pair_in_order_after_the_assistant_message() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Two calls."},
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "/a"}},
                {"type": "tool_use", "id": "t2", "name": "Grep", "input": {"pattern": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "A"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": "B"}],
                    "is_error": True,
                },
                {"type": "text", "text": "next?"},
            ],
        },
    ]
    assert translate(base(messages=messages))["messages"] == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Two calls.",
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "Read", "arguments": '{"path":"/a"}'}},
                {"id": "t2", "type": "function", "function": {"name": "Grep", "arguments": '{"pattern":"x"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "A"},
        {"role": "tool", "tool_call_id": "t2", "content": "[error] B"},
        {"role": "user", "content": "next?"},
    ]


def test_images_become_data_urls_and_urls() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this?"},
    ]
    assert translate(base(messages=[{"role": "user", "content": content}]))["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this?"},
    ]


def test_tool_choice_mapping() -> None:
    tools = [{"name": "Read", "input_schema": {"type": "object"}}]
    cases = {
        "auto": "auto",
        "any": "required",
        "none": "none",
    }
    for kind, expected in cases.items():
        assert translate(base(tools=tools, tool_choice={"type": kind}))["tool_choice"] == expected
    named = translate(
        base(tools=tools, tool_choice={"type": "tool", "name": "Read", "disable_parallel_tool_use": True})
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "Read"}}
    assert named["parallel_tool_calls"] is False


def test_thinking_blocks_are_dropped_not_refused() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "text", "text": "a"},
            ],
        },
    ]
    assert translate(base(messages=messages))["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": [{"text": "no type"}]}],
        [{"role": "user", "content": [{"type": "text"}]}],
        [{"role": "assistant", "content": [{"type": "tool_use", "name": "x", "input": {}}]}],
        [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}],
        [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}],
        [{"role": "robot", "content": "x"}],
    ],
)
def test_structurally_wrong_blocks_are_400(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(ApiError) as caught:
        translate(base(messages=messages))
    assert caught.value.status == 400


def test_claude_code_body_golden() -> None:
    body = claude_code_body()
    out = translate(body, model="qwen", max_tokens=4096)
    assert list(out) == ["model", "messages", "tools", "max_tokens", "temperature", "stream", "stream_options"]
    system = out["messages"][0]
    assert system["role"] == "system"
    assert "x-anthropic-billing-header" not in system["content"]
    assert system["content"].startswith("You are Claude Code, Anthropic's official CLI for Claude.\n\nYou are an")
    # The mid-conversation system message keeps its place, merged into the first user turn ahead of its
    # text, so the user's question stays the last thing the model reads.
    first_user = out["messages"][1]
    assert first_user["role"] == "user"
    assert first_user["content"].startswith("<system-reminder>\nAvailable agent types:")
    assert "<system-reminder>\nAs you answer" in first_user["content"]
    assert first_user["content"].rstrip().endswith("List the Python files and read the README.")
    assert first_user["content"].index("Available agent") < first_user["content"].index("List the Python files")
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user", "assistant", "tool", "user"]
    assert out["messages"][2] == {
        "role": "assistant",
        "content": "Step 0: looking.",
        "tool_calls": [
            {"id": "toolu_00", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}
        ],
    }
    assert len(out["tools"]) == 24
    assert [t["function"]["name"] for t in out["tools"]] == [t["name"] for t in body["tools"]]
    assert out["tools"][0]["function"]["parameters"] is body["tools"][0]["input_schema"] or (
        out["tools"][0]["function"]["parameters"] == body["tools"][0]["input_schema"]
    )
    for dropped in ("thinking", "output_config", "context_management", "metadata", "system"):
        assert dropped not in out


def test_translation_is_byte_stable_across_conversations() -> None:
    """Cache hygiene: two conversations differing only in the billing line give identical prefixes."""
    a = dumps(translate(claude_code_body(conversation="a1f"), model="m"))
    b = dumps(translate(claude_code_body(conversation="9c0"), model="m"))
    assert a == b
    schema = json.loads(a)["tools"][3]["function"]["parameters"]
    assert list(schema) == ["$schema", "type", "properties", "required", "additionalProperties"]


def test_leading_system_message_joins_the_system_prompt() -> None:
    messages = [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}]
    out = translate(base(system="main", messages=messages))
    assert out["messages"][:2] == [{"role": "system", "content": "main\n\nrules"}, {"role": "user", "content": "hi"}]


def test_system_message_after_tool_results_goes_into_the_next_user_turn() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "X", "input": {}}]},
        {"role": "system", "content": "note"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]},
    ]
    out = translate(base(messages=messages))["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "user"]
    assert out[3]["content"] == "<system-reminder>\nnote\n</system-reminder>"


def test_server_tools_are_dropped() -> None:
    tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "Read", "input_schema": {"type": "object"}},
    ]
    assert [t["function"]["name"] for t in translate(base(tools=tools))["tools"]] == ["Read"]
