"""Tool-call parsers: every format, complete and streamed at every split, malformed markup, detection."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.tool_parsers import (
    PARSERS,
    ParsedOutput,
    StreamEvent,
    TextDelta,
    ToolParser,
    detect_parser,
    get_parser,
    parse_any,
)
from tests.tool_streams import Call, calls_of, feed_all, summary

MARKERS: dict[str, tuple[str, ...]] = {
    "hermes": ("<tool_call>", "</tool_call>"),
    "qwen3_coder": ("<tool_call>", "</tool_call>", "<function=", "</function>", "<parameter=", "</parameter>"),
    "harmony": ("<|", "|>", "to=functions"),
    "llama3_json": ("<|python_tag|>", '"name"'),
    "mistral": ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"),
}


@dataclass(frozen=True)
class Case:
    id: str
    parser: str
    text: str
    content: str
    calls: tuple[Call, ...]
    reasoning: str = ""


NESTED = {"edits": [{"old": "a", "new": {"deep": [1, 2.5, {"k": None}]}}], "flag": False}
UNICODE = {"text": "héllo 世界 🎉", "path": "/tmp/naïve"}

CASES = [
    # hermes
    Case(
        "hermes-single",
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        (("get_weather", {"city": "Paris"}),),
    ),
    Case(
        "hermes-several-after-text",
        "hermes",
        'I will check both.\n\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>',
        "I will check both.",
        (("a", {"x": 1}), ("b", {})),
    ),
    Case(
        "hermes-nested",
        "hermes",
        f'<tool_call>\n{{"name": "edit", "arguments": {json.dumps(NESTED)}}}\n</tool_call>',
        "",
        (("edit", NESTED),),
    ),
    Case(
        "hermes-unicode",
        "hermes",
        "Voilà :\n<tool_call>\n"
        f'{{"name": "write", "arguments": {json.dumps(UNICODE, ensure_ascii=False)}}}\n</tool_call>',
        "Voilà :",
        (("write", UNICODE),),
    ),
    Case(
        "hermes-arguments-as-string",
        "hermes",
        '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": [1, {\\"b\\": \\"c\\"}]}"}\n</tool_call>',
        "",
        (("f", {"a": [1, {"b": "c"}]}),),
    ),
    Case(
        "hermes-text-between-and-after",
        "hermes",
        'First.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n\nThen more.\n',
        "First.\nThen more.\n",
        (("a", {}),),
    ),
    Case(
        "hermes-parameters-key",
        "hermes",
        '<tool_call>{"name": "ls", "parameters": {"dir": "."}}</tool_call>',
        "",
        (("ls", {"dir": "."}),),
    ),
    # qwen3_coder
    Case(
        "qwen3_coder-single-typed",
        "qwen3_coder",
        "<tool_call>\n<function=write_file>\n<parameter=path>\n/tmp/x.py\n</parameter>\n<parameter=count>\n3\n"
        '</parameter>\n<parameter=force>\ntrue\n</parameter>\n<parameter=opts>\n{"a": [1, 2]}\n</parameter>\n'
        '<parameter=tags>\n["x", "y"]\n</parameter>\n</function>\n</tool_call>',
        "",
        (("write_file", {"path": "/tmp/x.py", "count": 3, "force": True, "opts": {"a": [1, 2]}, "tags": ["x", "y"]}),),
    ),
    Case(
        "qwen3_coder-strings-stay-strings",
        "qwen3_coder",
        '<tool_call>\n<function=f>\n<parameter=code>\ndef f():\n    return "世界"\n</parameter>\n'
        '<parameter=quoted>\n"007"\n</parameter>\n<parameter=word>\n12abc\n</parameter>\n</function>\n</tool_call>',
        "",
        (("f", {"code": 'def f():\n    return "世界"', "quoted": '"007"', "word": "12abc"}),),
    ),
    Case(
        "qwen3_coder-no-wrapper",
        "qwen3_coder",
        "Listing.\n<function=ls>\n<parameter=dir>\n.\n</parameter>\n</function>",
        "Listing.",
        (("ls", {"dir": "."}),),
    ),
    Case(
        "qwen3_coder-several",
        "qwen3_coder",
        "Two reads:\n<tool_call>\n<function=read>\n<parameter=path>\na.txt\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=read>\n<parameter=path>\nb.txt\n</parameter>\n</function>\n</tool_call>",
        "Two reads:",
        (("read", {"path": "a.txt"}), ("read", {"path": "b.txt"})),
    ),
    Case(
        "qwen3_coder-missing-parameter-close",
        "qwen3_coder",
        "<tool_call>\n<function=f>\n<parameter=a>\n1\n<parameter=b>\nx\n</function>\n</tool_call>",
        "",
        (("f", {"a": 1, "b": "x"}),),
    ),
    Case(
        "qwen3_coder-json-body",
        "qwen3_coder",
        '<tool_call>\n{"name": "f", "arguments": {"a": "é"}}\n</tool_call>',
        "",
        (("f", {"a": "é"}),),
    ),
    # harmony
    Case(
        "harmony-call",
        "harmony",
        "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "SF"}<|call|>',
        "",
        (("get_weather", {"city": "SF"}),),
        "Need the weather.",
    ),
    Case(
        "harmony-final",
        "harmony",
        "<|channel|>analysis<|message|>Simple sum.<|end|><|start|>assistant<|channel|>final<|message|>"
        "2 + 2 = 4, {ok} <b>.<|return|>",
        "2 + 2 = 4, {ok} <b>.",
        (),
        "Simple sum.",
    ),
    Case(
        "harmony-call-stop-token-cut",
        "harmony",
        '<|channel|>commentary to=functions.edit <|constrain|>json<|message|>{"edits": [{"a": {"b": 1}}]}',
        "",
        (("edit", {"edits": [{"a": {"b": 1}}]}),),
    ),
    Case(
        "harmony-preamble-and-several",
        "harmony",
        "<|channel|>commentary<|message|>Checking both.<|end|>"
        '<|start|>assistant<|channel|>commentary to=functions.read json<|message|>{"path": "ä.txt"}<|call|>'
        '<|start|>assistant to=functions.read<|channel|>commentary json<|message|>{"path": "b.txt"}<|call|>',
        "Checking both.",
        (("read", {"path": "ä.txt"}), ("read", {"path": "b.txt"})),
    ),
    Case(
        "harmony-two-messages",
        "harmony",
        "<|channel|>commentary<|message|>First.<|end|><|start|>assistant<|channel|>final<|message|>Second.<|return|>",
        "First.\n\nSecond.",
        (),
    ),
    # llama3_json
    Case(
        "llama3_json-tagged",
        "llama3_json",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        (("get_weather", {"city": "Paris"}),),
    ),
    Case(
        "llama3_json-several",
        "llama3_json",
        f'{{"name": "a", "arguments": {json.dumps(NESTED)}}}; {{"name": "b", "parameters": {{}}}}\n'
        f'{{"name": "c", "parameters": {json.dumps(UNICODE, ensure_ascii=False)}}}',
        "",
        (("a", NESTED), ("b", {}), ("c", UNICODE)),
    ),
    Case(
        "llama3_json-missing-final-brace",
        "llama3_json",
        '\n{"name": "f", "parameters": {"a": [1, 2]}',
        "",
        (("f", {"a": [1, 2]}),),
    ),
    # mistral
    Case(
        "mistral-list",
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "",
        (("get_weather", {"city": "Paris"}),),
    ),
    Case(
        "mistral-list-several-after-text",
        "mistral",
        f'Doing it. [TOOL_CALLS] [{{"name": "a", "arguments": {json.dumps(NESTED)}}}, '
        f'{{"name": "b", "arguments": {json.dumps(UNICODE, ensure_ascii=False)}}}]',
        "Doing it.",
        (("a", NESTED), ("b", UNICODE)),
    ),
    Case(
        "mistral-named",
        "mistral",
        '[TOOL_CALLS]read[ARGS]{"path": "a]b{.txt"}[TOOL_CALLS]grep[CALL_ID]a1B2c3D4e[ARGS]{"q": "é", "n": 2}',
        "",
        (("read", {"path": "a]b{.txt"}), ("grep", {"q": "é", "n": 2})),
    ),
    Case(
        "mistral-missing-final-bracket",
        "mistral",
        '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1,}}',
        "",
        (("f", {"a": 1}),),
    ),
]

REPAIRED = [
    ("trailing-commas", '{"name": "f", "arguments": {"a": 1, "b": [1, 2,],},}', {"a": 1, "b": [1, 2]}),
    ("missing-closing-brace", '{"name": "f", "arguments": {"a": {"b": 1}}', {"a": {"b": 1}}),
    (
        "python-literals",
        '{"name": "f", "arguments": {"a": True, "b": None, "c": False}}',
        {"a": True, "b": None, "c": False},
    ),
    ("single-quotes", "{'name': 'f', 'arguments': {'a': 'x y'}}", {"a": "x y"}),
    ("extra-closing-brace", '{"name": "f", "arguments": {"a": 1}}}', {"a": 1}),
]

UNREPAIRABLE_BODIES = [
    ("missing-value", '{"name": "f", "arguments": {"a": }}'),
    ("apostrophe-in-single-quotes", "{'name': 'f', 'arguments': {'a': 'it's'}}"),
    ("unterminated-string", '{"name": "f", "arguments": {"a": "oops}}'),
    ("no-name", '{"arguments": {"a": 1}}'),
    ("arguments-not-object", '{"name": "f", "arguments": [1, 2]}'),
]

MALFORMED = [("hermes", "<tool_call>\n" + body + "\n</tool_call>") for _, body in UNREPAIRABLE_BODIES] + [
    ("hermes", 'Start.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}'),
    ("qwen3_coder", "<tool_call>\n<function=>\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>"),
    ("qwen3_coder", "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n"),
    ("qwen3_coder", "<tool_call>\nno function here\n</tool_call>"),
    ("harmony", '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": }<|call|>'),
    ("harmony", "<|channel|>commentary to=functions.f <|constrain|>json"),
    ("llama3_json", '<|python_tag|>{"name": "f", "parameters": {"a": }}'),
    ("llama3_json", "<|python_tag|>brave_search.call(query='x')"),
    ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {"a": }}]'),
    ("mistral", "[TOOL_CALLS] not a call"),
    ("mistral", '[TOOL_CALLS]f[ARGS]["a"]'),
]

PLAIN_TEXTS = [
    'Use a dict like {"a": 1} or <b>bold</b>; x < y > z, a[0] and <tool> or <|> are fine.',
    "<tool_callx> </tool_call> <function_x> [TOOL_CALL] <|channel> [1, 2]",
    '{"a": 1} is a dict, not a call.',
    '{"name": "Alice", "age": 30}',
    "Some code:\n```python\nif a < b and c[1] > {}:\n    pass\n```\n",
]


def run_stream(parser: ToolParser, pieces: list[str]) -> list[StreamEvent]:
    return feed_all(parser.stream(), pieces)


def assert_stream_matches(parser: ToolParser, text: str, markers: tuple[str, ...] = ()) -> None:
    whole = parser.parse(text)
    expected = (whole.content, calls_of(whole.tool_calls))
    chunkings = [[text[:cut], text[cut:]] for cut in range(len(text) + 1)] + [list(text)]
    for pieces in chunkings:
        events = run_stream(parser, pieces)
        assert summary(events) == expected, pieces
        for event in events:
            if isinstance(event, TextDelta):
                assert not any(m in event.text for m in markers), (event.text, pieces)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parse_gives_content_and_calls(case: Case) -> None:
    parsed = PARSERS[case.parser].parse(case.text)
    assert parsed.content == case.content
    assert calls_of(parsed.tool_calls) == list(case.calls)
    assert parsed.reasoning == case.reasoning


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_streaming_matches_parse_at_every_split(case: Case) -> None:
    assert_stream_matches(PARSERS[case.parser], case.text, MARKERS[case.parser])
    assert not any(m in case.content for m in MARKERS[case.parser])


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_streaming_matches_parse_for_random_chunkings(case: Case, cuts: list[int]) -> None:
    points = sorted({cut % (len(case.text) + 1) for cut in cuts})
    pieces = [case.text[a:b] for a, b in zip([0, *points], [*points, len(case.text)], strict=True)]
    assert summary(run_stream(PARSERS[case.parser], pieces)) == (case.content, list(case.calls))


def test_call_ids_are_unique_and_well_formed() -> None:
    parsed = PARSERS["hermes"].parse(CASES[1].text + CASES[1].text)
    ids = [c.id for c in parsed.tool_calls]
    assert len(set(ids)) == len(ids) == 4
    assert all(re.fullmatch(r"call_[0-9a-zA-Z]{24}", i) for i in ids)


def test_arguments_are_json_dumps_of_the_object() -> None:
    parsed = PARSERS["hermes"].parse(CASES[3].text)
    assert parsed.tool_calls[0].arguments == json.dumps(UNICODE, ensure_ascii=False)


@pytest.mark.parametrize(("body", "args"), [(b, a) for _, b, a in REPAIRED], ids=[i for i, _, _ in REPAIRED])
@pytest.mark.parametrize("parser", ["hermes", "qwen3_coder", "llama3_json"])
def test_malformed_json_is_repaired_when_unambiguous(
    parser: str, body: str, args: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    text = body if parser == "llama3_json" else f"<tool_call>\n{body}\n</tool_call>"
    with caplog.at_level(logging.WARNING, logger="anyclaude.tools"):
        parsed = PARSERS[parser].parse(text)
    assert calls_of(parsed.tool_calls) == [("f", args)]
    assert parsed.content == ""
    assert not caplog.records
    assert_stream_matches(PARSERS[parser], text, MARKERS[parser])


def test_mistral_and_harmony_repair_arguments() -> None:
    mistral = PARSERS["mistral"].parse("[TOOL_CALLS]f[ARGS]{'a': True,}")
    harmony = PARSERS["harmony"].parse('<|channel|>commentary to=functions.f json<|message|>{"a": [1,],<|call|>')
    assert calls_of(mistral.tool_calls) == [("f", {"a": True})]
    assert calls_of(harmony.tool_calls) == [("f", {"a": [1]})]


@pytest.mark.parametrize(("parser", "text"), MALFORMED, ids=[f"{p}-{i}" for i, (p, _) in enumerate(MALFORMED)])
def test_unrepairable_markup_comes_back_as_text_with_a_warning(
    parser: str, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="anyclaude.tools"):
        parsed = PARSERS[parser].parse(text)
    assert parsed.tool_calls == []
    assert parsed.content == text
    assert [r.name for r in caplog.records] == ["anyclaude.tools"]
    assert caplog.records[0].levelno == logging.WARNING
    assert "returned as text" in caplog.records[0].getMessage()
    assert_stream_matches(PARSERS[parser], text)


def test_a_bad_call_does_not_swallow_the_good_one_after_it(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        '<tool_call>\n{"name": "f", "arguments": {"a": }}\n</tool_call>\n'
        '<tool_call>\n{"name": "g", "arguments": {"b": 2}}\n</tool_call>'
    )
    with caplog.at_level(logging.WARNING, logger="anyclaude.tools"):
        parsed = PARSERS["hermes"].parse(text)
    assert calls_of(parsed.tool_calls) == [("g", {"b": 2})]
    assert parsed.content == '<tool_call>\n{"name": "f", "arguments": {"a": }}\n</tool_call>'
    assert len(caplog.records) == 1


@pytest.mark.parametrize("text", PLAIN_TEXTS)
@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_plain_text_is_untouched(parser: str, text: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="anyclaude.tools"):
        parsed = PARSERS[parser].parse(text)
    assert parsed == ParsedOutput(text, [])
    assert not caplog.records
    assert_stream_matches(PARSERS[parser], text)


def test_llama3_json_only_when_the_whole_output_is_calls() -> None:
    text = 'Here you go: {"name": "f", "parameters": {}}'
    call_then_text = '{"name": "f", "parameters": {}} and then prose'
    assert PARSERS["llama3_json"].parse(text) == ParsedOutput(text, [])
    assert PARSERS["llama3_json"].parse(call_then_text) == ParsedOutput(call_then_text, [])


def test_text_flows_out_before_the_output_ends() -> None:
    for name in ("hermes", "qwen3_coder", "mistral", "llama3_json", "harmony"):
        stream = PARSERS[name].stream()
        assert stream.feed("Hello there, ") == [TextDelta("Hello there,")]
        assert stream.feed("world") == [TextDelta(" world")]


def test_partial_marker_is_held_back_then_released_as_text() -> None:
    stream = PARSERS["hermes"].stream()
    assert stream.feed("a <tool_ca") == [TextDelta("a")]
    assert stream.feed("b>") == [TextDelta(" <tool_cab>")]


def test_tool_call_is_emitted_as_soon_as_it_is_complete() -> None:
    stream = PARSERS["hermes"].stream()
    events = stream.feed('<tool_call>{"name": "f", "arguments": {}}</tool_call>\n')
    assert summary(events) == ("", [("f", {})])
    assert stream.finish() == []


def test_harmony_analysis_never_reaches_content() -> None:
    text = "<|channel|>analysis<|message|>secret plan<|end|><|start|>assistant<|channel|>final<|message|>Done."
    for pieces in ([text], list(text)):
        events = run_stream(PARSERS["harmony"], pieces)
        assert summary(events) == ("Done.", [])
    stream = PARSERS["harmony"].stream()
    stream.feed(text)
    assert stream.reasoning == "secret plan"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{%- if tools %}<tools>\n{{ tool | tojson }}\n</tools>\n<tool_call>\n{"name": <function-name>}', "hermes"),
        ("<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue", "qwen3_coder"),
        ("{{- '<|start|>assistant<|channel|>final<|message|>' }}", "harmony"),
        ("{{- ' to=functions.' + tool.name }}", "harmony"),
        ("[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS] ... [TOOL_CALLS]", "mistral"),
        ("{{- '<|python_tag|>' + tool_call.name }}", "llama3_json"),
        ("<|start_header_id|>ipython<|end_header_id|>\n\n{{ message.content }}", "llama3_json"),
    ],
)
def test_detect_parser_from_template(template: str, expected: str) -> None:
    parser = detect_parser(template, model_type="phi3")
    assert parser is not None
    assert parser.name == expected


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [
        ("qwen2", "hermes"),
        ("qwen3", "hermes"),
        ("qwen3_moe", "hermes"),
        ("qwen3_moe_coder", "qwen3_coder"),
        ("gpt_oss", "harmony"),
        ("mistral", "mistral"),
        ("llama", "llama3_json"),
        ("phi3", None),
    ],
)
def test_detect_parser_falls_back_to_model_type(model_type: str, expected: str | None) -> None:
    parser = detect_parser("{{ messages }}", model_type)
    assert (parser.name if parser else None) == expected
    assert detect_parser(None, model_type) is parser


def test_detect_parser_without_hints_is_none() -> None:
    assert detect_parser(None) is None
    assert detect_parser("") is None


def test_get_parser_names_the_known_parsers() -> None:
    assert get_parser("mistral") is PARSERS["mistral"]
    assert set(PARSERS) == {"hermes", "qwen3_coder", "harmony", "llama3_json", "mistral"}
    with pytest.raises(KeyError, match="harmony, hermes, llama3_json, mistral, qwen3_coder"):
        get_parser("nope")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parse_any_finds_every_format(case: Case) -> None:
    parsed = parse_any(case.text)
    assert (parsed.content, calls_of(parsed.tool_calls)) == (case.content, list(case.calls))


@pytest.mark.parametrize("text", PLAIN_TEXTS)
def test_parse_any_leaves_plain_text_alone(text: str) -> None:
    assert parse_any(text) == ParsedOutput(text, [])
