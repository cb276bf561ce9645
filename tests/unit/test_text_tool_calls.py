"""Tool calls real small models write as text (Qwen2.5-Coder 0.5B/1.5B asked through Claude Code's tools),
turned into calls when they name an offered tool and fit its schema; everything else stays text."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.tool_parsers.recover import Toolbox, json_verdict
from launcher.bridge.leaks import TextCallWatch, ToolCallFound
from launcher.bridge.response import MessageAssembler
from launcher.bridge.stream import StreamTranslator
from tests.scripted_backend import chunk

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "Read",
            "parameters": {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string"},
                    "offset": {"type": "integer"},
                    "limit": {"type": "integer"},
                },
                "required": ["file_path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "Edit",
            "parameters": {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string"},
                    "old_string": {"type": "string"},
                    "new_string": {"type": "string"},
                    "replace_all": {"type": "boolean"},
                },
                "required": ["file_path", "old_string", "new_string"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "Bash",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                "required": ["command"],
            },
        },
    },
]
NOTES = {"file_path": "/tmp/x/notes.txt"}

# (what the model wrote, the text the client sees, the calls as (name, input))
CASES: dict[str, tuple[str, str, list[tuple[str, dict[str, Any]]]]] = {
    "hermes": (
        '<tool_call>\n{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}}\n</tool_call>',
        "",
        [("Read", NOTES)],
    ),
    "json fence after prose": (
        "I'll read the file to find the word.\n\n```json\n"
        '{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}}\n```',
        "I'll read the file to find the word.\n\n",
        [("Read", NOTES)],
    ),
    "plain fence": (
        '```\n{\n  "name": "Read",\n  "arguments": {\n    "file_path": "/tmp/x/notes.txt"\n  }\n}\n```\n',
        "",
        [("Read", NOTES)],
    ),
    "two fenced calls": (
        'First the file:\n```json\n{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}}\n```\n'
        'Then the listing:\n```json\n{"name": "Bash", "arguments": {"command": "ls /tmp/x"}}\n```',
        "First the file:\nThen the listing:\n",
        [("Read", NOTES), ("Bash", {"command": "ls /tmp/x"})],
    ),
    "two calls in one fence": (
        '```json\n{"name": "Read", "arguments": {"file_path": "/a"}}\n'
        '{"name": "Read", "arguments": {"file_path": "/b"}}\n```',
        "",
        [("Read", {"file_path": "/a"}), ("Read", {"file_path": "/b"})],
    ),
    "bare JSON": ('{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}}', "", [("Read", NOTES)]),
    "bare JSON after prose": (
        'Let me look.\n{"name": "Bash", "arguments": {"command": "ls -la"}}\n',
        "Let me look.\n",
        [("Bash", {"command": "ls -la"})],
    ),
    "doubled braces": ('{{"name": "Read", "arguments": {{"file_path": "a"}}}}', "", [("Read", {"file_path": "a"})]),
    "doubled braces in tool_call": (
        '<tool_call>\n{{"name": "Read", "arguments": {{"file_path": "/tmp/x/notes.txt"}}}}\n</tool_call>',
        "",
        [("Read", NOTES)],
    ),
    "a fence inside tool_call": (
        '<tool_call>\n```json\n{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}}\n```\n</tool_call>',
        "",
        [("Read", NOTES)],
    ),
    "tool_call never closed": (
        'Sure.\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}}\n',
        "Sure.\n",
        [("Read", NOTES)],
    ),
    "single quotes": (
        "```json\n{'name': 'Read', 'arguments': {'file_path': '/tmp/x/notes.txt'}}\n```",
        "",
        [("Read", NOTES)],
    ),
    "trailing commas and Python literals": (
        '{"name": "Edit", "arguments": {"file_path": "/a", "old_string": "x", "new_string": "y", '
        '"replace_all": True,},}',
        "",
        [("Edit", {"file_path": "/a", "old_string": "x", "new_string": "y", "replace_all": True})],
    ),
    "missing final closer": (
        'Reading.\n{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt"}',
        "Reading.\n",
        [("Read", NOTES)],
    ),
    "parameters key, arguments as a string, values coerced": (
        '```json\n{"name": "read", "parameters": "{\\"file_path\\": \\"/a\\", \\"limit\\": \\"3\\"}"}\n```',
        "",
        [("Read", {"file_path": "/a", "limit": 3})],
    ),
    "a list of calls": (
        'Both:\n[{"name": "Read", "arguments": {"file_path": "/a"}}, {"name": "Bash", "arguments": {"command": "ls"}}]',
        "Both:\n",
        [("Read", {"file_path": "/a"}), ("Bash", {"command": "ls"})],
    ),
    "qwen3-coder XML in an xml fence": (
        "```xml\n<function=Bash>\n<parameter=command>\nls\n</parameter>\n</function>\n```",
        "",
        [("Bash", {"command": "ls"})],
    ),
    "qwen3-coder XML": (
        "<function=Read>\n<parameter=file_path>\n/tmp/x/notes.txt\n</parameter>\n"
        "<parameter=limit>\n20\n</parameter>\n</function>",
        "",
        [("Read", {"file_path": "/tmp/x/notes.txt", "limit": 20})],
    ),
    "qwen3-coder XML in tool_call": (
        "Reading it.\n<tool_call>\n<function=Bash>\n<parameter=command>\nls\n</parameter>\n</function>\n</tool_call>",
        "Reading it.\n",
        [("Bash", {"command": "ls"})],
    ),
}

# Text that must come through unchanged and fire nothing.
PLAIN = {
    "a JSON example naming no tool": "A package file looks like this:\n"
    '```json\n{"name": "my-app", "version": "1.0.0"}\n```\nSave it as package.json.',
    "a bare object naming no tool": '{"name": "Alice", "age": 30}',
    "code in a fence": '```python\ndef f():\n    return {"name": "Read"}\n```\nThat is all.',
    "braces in prose": "Use a dict:\n{ not json here }\nand a set {1, 2}.",
    "inline JSON": 'Call it as `{"name": "Read", "arguments": {}}` when needed.',
    "markdown at line starts": "[docs](https://example.com) and\n[ ] a task\n`code` here\n  - item",
    "just prose": "The word in the file is papaya.\nNothing else to do.",
}

# Calls that name an offered tool but cannot be made to fit: text, and flagged.
FAILED = {
    "a required argument missing": '```json\n{"name": "Read", "arguments": {"limit": 3}}\n```',
    "a value of the wrong type": '{"name": "Read", "arguments": {"file_path": "/a", "limit": "three"}}',
    "JSON too broken to read": '```json\n{"name": "Bash", "arguments": {"command": "ls" "-la"]]}\n```',
    "markup that does not parse": '<tool_call>\n{"name": "Read", "arguments": {"file_path": \n</tool_call>',
    "tool_call cut off": '<tool_call>\n{"name": "Read", "arguments": {"file_path": "/tmp/x/no',
    "markup naming no offered tool": '<tool_call>\n{"name": "WebFetch", "arguments": {"url": "x"}}\n</tool_call>',
}


def run(text: str, pieces: list[str] | None = None) -> tuple[str, list[tuple[str, dict[str, Any]]], list[Any]]:
    """Feed `pieces` (default: the whole text) and return the text, the calls and what was reported."""
    reported: list[tuple[int, bool]] = []
    watch = TextCallWatch(TOOLS, lambda n, failed: reported.append((n, failed)))
    out: list[str | ToolCallFound] = []
    for piece in pieces if pieces is not None else [text]:
        out += watch.feed(piece)
    out += watch.finish()
    shown = "".join(item for item in out if isinstance(item, str))
    calls = [(item.name, json.loads(item.arguments)) for item in out if isinstance(item, ToolCallFound)]
    return shown, calls, reported


@pytest.mark.parametrize("name", list(CASES))
def test_each_form_becomes_calls(name: str) -> None:
    text, shown, calls = CASES[name]
    assert run(text) == (shown, calls, [(len(calls), False)])


@pytest.mark.parametrize("name", list(PLAIN))
def test_text_naming_no_tool_stays_text_unchanged(name: str) -> None:
    assert run(PLAIN[name]) == (PLAIN[name], [], [(0, False)])


@pytest.mark.parametrize("name", list(FAILED))
def test_an_unfixable_call_is_shown_as_text_and_flagged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "ls"  # an argument value: never logged
    with caplog.at_level(logging.WARNING, "anyclaude.bridge"):
        assert run(FAILED[name]) == (FAILED[name], [], [(0, True)])
    reasons = [r.getMessage() for r in caplog.records if r.name == "anyclaude.bridge"]
    assert reasons and all("shown as text" in r for r in reasons)
    assert not any(f'"{secret}"' in r or "three" in r for r in reasons)


def splits(text: str) -> list[list[str]]:
    """The text in two pieces at every boundary, in pieces of one character, and in pieces of three."""
    return [[text[:i], text[i:]] for i in range(1, len(text))] + [
        list(text),
        [text[i : i + 3] for i in range(0, len(text), 3)],
    ]


@pytest.mark.parametrize("name", [*CASES, *PLAIN, *FAILED])
def test_split_into_stream_chunks_anywhere_gives_the_same_result(name: str) -> None:
    text = CASES[name][0] if name in CASES else PLAIN.get(name) or FAILED[name]
    whole = run(text)
    for pieces in splits(text):
        assert run(text, pieces) == whole, pieces


def test_text_before_a_call_streams_live_and_a_fence_that_is_no_call_is_released_when_it_closes() -> None:
    watch = TextCallWatch(TOOLS)
    assert watch.feed("I'll check ") == ["I'll check "]
    assert watch.feed("the file.\n```") == ["the file.\n"]
    assert watch.feed('json\n{"name": "my-app"') == []  # held: it may be a call
    released = watch.feed("}\n```\nMore text")
    assert "".join(x for x in released if isinstance(x, str)) == '```json\n{"name": "my-app"}\n```\nMore text'
    assert watch.feed(" follows.") == [" follows."]


def test_a_code_fence_streams_without_waiting_for_its_end() -> None:
    watch = TextCallWatch(TOOLS)
    out = watch.feed("```python\nprint(1)\n")
    assert "".join(x for x in out if isinstance(x, str)) == "```python\nprint(1)"  # its last line may close it
    assert watch.feed("x = {\n") == ["\nx = {"]  # a `{` line inside code is no candidate


def test_without_tools_only_markup_is_parsed() -> None:
    watch = TextCallWatch(None)
    text = '```json\n{"name": "Read", "arguments": {"file_path": "/a"}}\n```'
    assert watch.feed(text) + watch.finish() == [text]


def fold(text_pieces: list[str]) -> dict[str, Any]:
    translator = StreamTranslator("claude-x", parser=TextCallWatch(TOOLS))
    events = translator.start()
    for piece in text_pieces:
        events += translator.feed(chunk({"content": piece}))
    events += translator.feed(chunk(finish="stop")) + translator.finish()
    assembler = MessageAssembler()
    for event in events:
        assembler.add(event)
    return assembler.message


def test_recovered_calls_are_tool_use_blocks_with_stop_reason_tool_use() -> None:
    text = CASES["two fenced calls"][0]
    message = fold([text[i : i + 4] for i in range(0, len(text), 4)])
    blocks = [(b["type"], b.get("name"), b.get("input")) for b in message["content"]]
    assert blocks[0] == ("text", None, None)
    assert blocks[1:3] == [("tool_use", "Read", NOTES), ("tool_use", "Bash", {"command": "ls /tmp/x"})]
    assert message["stop_reason"] == "tool_use"


def test_a_failed_call_ends_the_turn_as_text() -> None:
    message = fold([FAILED["a required argument missing"]])
    assert message["content"] == [{"type": "text", "text": FAILED["a required argument missing"]}]
    assert message["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("3", "integer", 3),
        (3.0, "integer", 3),
        ("2.5", "number", 2.5),
        ("true", "boolean", True),
        (7, "string", "7"),
        ('["a"]', "array", ["a"]),
        ('{"a": 1}', "object", {"a": 1}),
    ],
)
def test_values_are_coerced_where_the_schema_makes_it_unambiguous(value: Any, kind: str, expected: Any) -> None:
    box = Toolbox([{"name": "T", "input_schema": {"type": "object", "properties": {"v": {"type": kind}}}}])
    verdict = json_verdict(json.dumps({"name": "T", "arguments": {"v": value}}), box)
    assert [json.loads(c.arguments) for c in verdict.calls] == [{"v": expected}]


@pytest.mark.parametrize(
    ("value", "kind"), [("3.5", "integer"), ("yes", "boolean"), ({"a": 1}, "string"), (True, "integer")]
)
def test_values_that_cannot_be_coerced_fail_the_call(value: Any, kind: str) -> None:
    box = Toolbox([{"name": "T", "input_schema": {"type": "object", "properties": {"v": {"type": kind}}}}])
    verdict = json_verdict(json.dumps({"name": "T", "arguments": {"v": value}}), box)
    assert verdict.calls == [] and verdict.failure == f"T's v should be {kind}"


def test_a_name_is_matched_exactly_else_by_a_unique_case_insensitive_match() -> None:
    box = Toolbox([{"name": "Read"}, {"name": "grep"}, {"name": "Grep"}])
    assert (box.resolve("read"), box.resolve("Grep"), box.resolve("GREP"), box.resolve("Write")) == (
        "Read",
        "Grep",
        None,
        None,
    )


_PIECES = [
    "```",
    "```json",
    "{",
    "}",
    "{{",
    "}}",
    '"name"',
    ": ",
    '"Read"',
    '"x"',
    ", ",
    '"arguments"',
    '"file_path"',
    '"/a"',
]
_PIECES += ["\n", " ", "Sure.", "<tool_call>", "</tool_call>", "<function=Read>", "'", "[", "]", "`"]


@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.lists(st.integers(1, 7), min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
@example(tokens=["```", "\n", "}", "```", "<tool_call>"], sizes=[1])  # "}```" closes no fence, split or not
def test_any_text_is_kept_whole_unless_it_became_calls_and_splitting_never_matters(
    tokens: list[str], sizes: list[int]
) -> None:
    text = "".join(tokens)
    pieces, at = [], 0
    for size in sizes * (len(text) + 1):
        if at >= len(text):
            break
        pieces.append(text[at : at + size])
        at += size
    whole = run(text)
    assert run(text, pieces) == whole
    shown, calls, _ = whole
    if not calls:
        assert shown == text
