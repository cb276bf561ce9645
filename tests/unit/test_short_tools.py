"""A small model's prompt: tool descriptions cut to their first sentence, a hint after each tool result."""

from __future__ import annotations

from typing import Any

from launcher.bridge.request import (
    REPEATED_CALL_HINT,
    TOOL_RESULT_HINT,
    Prepared,
    for_small_model,
    short_description,
    short_tool_descriptions,
)

BASH = {
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Executes a given bash command and returns its output.\n\nThe working directory persists "
        "between commands. IMPORTANT: avoid using this tool to run find, grep, cat.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to execute"},
                "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000). More."},
                "env": {"type": "array", "items": {"type": "object", "description": "One pair. Key and value."}},
            },
            "required": ["command"],
        },
    },
}


def test_descriptions_keep_their_first_sentence_and_only_required_parameters_stay() -> None:
    (short,) = short_tool_descriptions([BASH])

    assert short["function"]["description"] == "Executes a given bash command and returns its output."
    assert short["function"]["parameters"]["properties"] == {
        "command": {"type": "string", "description": "The command to execute"}
    }
    assert short["function"]["parameters"]["required"] == ["command"]
    assert BASH["function"]["description"].startswith("Executes") and "IMPORTANT" in BASH["function"]["description"]
    assert "timeout" in BASH["function"]["parameters"]["properties"]  # the client's tool is left as it was


def test_a_tool_without_required_parameters_keeps_them_all_with_short_descriptions() -> None:
    schema = {"type": "object", "properties": {"env": {"type": "array", "items": {"description": "One. Two."}}}}
    tool = {"type": "function", "function": {"name": "Env", "description": "Lists. More.", "parameters": schema}}

    (short,) = short_tool_descriptions([tool])

    assert short["function"]["parameters"]["properties"]["env"]["items"]["description"] == "One."


def test_a_long_first_sentence_is_cut_and_a_version_number_is_not_a_sentence_end() -> None:
    assert short_description("x" * 500) == "x" * 200
    assert short_description("Uses Python 3.11 for scripts. Then more.") == "Uses Python 3.11 for scripts."


def test_a_small_models_tool_results_end_with_the_hint_and_its_tools_are_short() -> None:
    prepared = Prepared(
        messages=[
            {"role": "user", "content": "What port?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "port = 8731"},
        ],
        tools=[BASH],
        tool_choice=None,
        no_parallel=False,
    )

    shaped = for_small_model(prepared)

    assert shaped.messages[2]["content"] == "port = 8731" + TOOL_RESULT_HINT
    assert shaped.messages[:2] == prepared.messages[:2]
    assert shaped.tools[0]["function"]["description"] == "Executes a given bash command and returns its output."
    assert prepared.messages[2]["content"] == "port = 8731"  # the original is left as it was


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
    }


def test_a_call_that_repeats_one_of_the_same_turn_with_the_same_result_gets_the_firmer_hint() -> None:
    reminder = "<system-reminder>\nToday is Monday.\n</system-reminder>"
    prepared = Prepared(
        messages=[
            {"role": "user", "content": "Fix a.py, then run the test."},
            _call("c1", "Bash", '{"command": "python3 t.py"}'),
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": reminder}]},  # reminders only: the same turn
            _call("c2", "Read", '{"file_path": "/w/t.py"}'),
            {"role": "tool", "tool_call_id": "c2", "content": "assert True"},
            _call("c3", "Bash", '{ "command":"python3 t.py" }'),  # the same call, spaced differently
            {"role": "tool", "tool_call_id": "c3", "content": "ok"},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Run it once more."},  # a new request: the same call is new again
            _call("c4", "Bash", '{"command": "python3 t.py"}'),
            {"role": "tool", "tool_call_id": "c4", "content": "ok"},
            _call("c5", "Bash", '{"command": "python3 t.py"}'),  # the same call with another result: news
            {"role": "tool", "tool_call_id": "c5", "content": "FAILED"},
        ],
        tools=[BASH],
        tool_choice=None,
        no_parallel=False,
    )

    results = {m["tool_call_id"]: m["content"] for m in for_small_model(prepared).messages if m["role"] == "tool"}

    assert results == {
        "c1": "ok" + TOOL_RESULT_HINT,
        "c2": "assert True" + TOOL_RESULT_HINT,
        "c3": "ok" + REPEATED_CALL_HINT,
        "c4": "ok" + TOOL_RESULT_HINT,
        "c5": "FAILED" + TOOL_RESULT_HINT,
    }
