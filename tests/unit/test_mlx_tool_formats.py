"""Every tool-call format the installed mlx-lm ships, streamed through `MlxToolStream` with mlx-lm's own parser.

The fixtures are model output written from each family's documentation (Kimi K2's tool-call guide, Kimi K3's
XTML channels, MiniMax M2's tool-calling guide, mistral-common's tokenizer versions, Gemma 4's prompt format,
LFM2's pythonic calls, ...) and from the markers each mlx-lm module reads: text before, one call, and two
calls where the format allows, with the arguments Claude Code's tools take. Each goes through the stream in
one piece and in random small chunks: the same text, the same calls in order, none lost, and each call out as
soon as its text is complete, not at the end of the reply.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.mlx_server.mlx_tools import MlxToolStream, mlx_parser_names
from adapters.tool_parsers import StreamEvent, TextDelta, ToolCallDelta
from tests.tool_streams import Call, feed_all, summary


def _tool(name: str, **properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}


STR: dict[str, Any] = {"type": "string"}
TOOLS = [
    _tool("Read", file_path=STR, offset={"type": "integer"}, limit={"type": "integer"}),
    _tool("Bash", command=STR, timeout={"type": "number"}, description=STR),
    _tool("Grep", pattern=STR, path=STR, **{"-i": {"type": "boolean"}}),
    _tool("Write", file_path=STR, content=STR),
    _tool("TodoWrite", todos={"type": "array", "items": {"type": "object"}}),
]

PY_SOURCE = 'def smaller(a, b):\n    return a if a < b else b  # "min" & more\n'


@dataclass(frozen=True)
class Fixture:
    id: str
    fmt: str
    text: str
    content: str
    calls: tuple[Call, ...]


FIXTURES = [
    # Hermes-style JSON in <tool_call> (Qwen2.5, Hermes, NousResearch templates).
    Fixture(
        "json_tools-one",
        "json_tools",
        'I\'ll read the config first.\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "/repo/setup.cfg"}}\n'
        "</tool_call>",
        "I'll read the config first.",
        (("Read", {"file_path": "/repo/setup.cfg"}),),
    ),
    Fixture(
        "json_tools-parallel",
        "json_tools",
        'Checking both.\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "/repo/a.py", "limit": 80}}\n'
        '</tool_call>\n<tool_call>\n{"name": "Grep", "arguments": {"pattern": "def main\\\\(", "path": "/repo"}}\n'
        "</tool_call>",
        "Checking both.",
        (("Read", {"file_path": "/repo/a.py", "limit": 80}), ("Grep", {"pattern": "def main\\(", "path": "/repo"})),
    ),
    # Qwen3-Coder: XML functions and parameters, values typed by the tool's schema.
    Fixture(
        "qwen3_coder-one",
        "qwen3_coder",
        "Let me run the unit tests.\n\n<tool_call>\n<function=Bash>\n<parameter=command>\npytest -q tests/unit\n"
        "</parameter>\n<parameter=timeout>\n120000\n</parameter>\n</function>\n</tool_call>",
        "Let me run the unit tests.",
        (("Bash", {"command": "pytest -q tests/unit", "timeout": 120000}),),
    ),
    Fixture(
        "qwen3_coder-parallel",
        "qwen3_coder",
        "I'll write the helper and check it.\n<tool_call>\n<function=Write>\n<parameter=file_path>\n/repo/util.py\n"
        f"</parameter>\n<parameter=content>\n{PY_SOURCE}</parameter>\n</function>\n</tool_call>\n<tool_call>\n"
        "<function=Bash>\n<parameter=command>\npython -c 'import util'\n</parameter>\n</function>\n</tool_call>",
        "I'll write the helper and check it.",
        (
            ("Write", {"file_path": "/repo/util.py", "content": PY_SOURCE.removesuffix("\n")}),
            ("Bash", {"command": "python -c 'import util'"}),
        ),
    ),
    # GLM-4.7: name then <arg_key>/<arg_value> pairs, no newlines; non-string values are JSON.
    Fixture(
        "glm47-one",
        "glm47",
        "I'll open the README.<tool_call>Read<arg_key>file_path</arg_key><arg_value>/repo/README.md</arg_value>"
        "<arg_key>limit</arg_key><arg_value>40</arg_value></tool_call>",
        "I'll open the README.",
        (("Read", {"file_path": "/repo/README.md", "limit": 40}),),
    ),
    Fixture(
        "glm47-parallel",
        "glm47",
        "Searching and listing at once.<tool_call>Grep<arg_key>pattern</arg_key><arg_value>TODO</arg_value>"
        "<arg_key>-i</arg_key><arg_value>true</arg_value></tool_call><tool_call>Bash<arg_key>command</arg_key>"
        "<arg_value>ls -la src</arg_value></tool_call>",
        "Searching and listing at once.",
        (("Grep", {"pattern": "TODO", "-i": True}), ("Bash", {"command": "ls -la src"})),
    ),
    # Poolside Laguna: GLM's format, written one pair per line as GLM-4.5 and 4.6 do.
    Fixture(
        "laguna-one",
        "laguna",
        "Running the linter.\n<tool_call>Bash\n<arg_key>command</arg_key>\n<arg_value>ruff check .</arg_value>\n"
        "<arg_key>timeout</arg_key>\n<arg_value>60000</arg_value>\n</tool_call>",
        "Running the linter.",
        (("Bash", {"command": "ruff check .", "timeout": 60000}),),
    ),
    Fixture(
        "laguna-parallel",
        "laguna",
        "Both files:\n<tool_call>Read\n<arg_key>file_path</arg_key>\n<arg_value>/repo/a.py</arg_value>\n</tool_call>\n"
        "<tool_call>Read\n<arg_key>file_path</arg_key>\n<arg_value>/repo/b.py</arg_value>\n</tool_call>",
        "Both files:",
        (("Read", {"file_path": "/repo/a.py"}), ("Read", {"file_path": "/repo/b.py"})),
    ),
    # Kimi K2: one section holds every call; each call is functions.NAME:INDEX, then its JSON arguments.
    Fixture(
        "kimi_k2-one",
        "kimi_k2",
        "Let me check the status.<|tool_calls_section_begin|><|tool_call_begin|>functions.Bash:0"
        '<|tool_call_argument_begin|>{"command": "git status --short"}<|tool_call_end|><|tool_calls_section_end|>',
        "Let me check the status.",
        (("Bash", {"command": "git status --short"}),),
    ),
    Fixture(
        "kimi_k2-parallel",
        "kimi_k2",
        "I'll read both modules.<|tool_calls_section_begin|>\n<|tool_call_begin|>functions.Read:3"
        '<|tool_call_argument_begin|>{"file_path": "/repo/a.py"}<|tool_call_end|>\n<|tool_call_begin|>'
        'functions.Read:4<|tool_call_argument_begin|>{"file_path": "/repo/b.py", "offset": 10}<|tool_call_end|>\n'
        "<|tool_calls_section_end|>",
        "I'll read both modules.",
        (("Read", {"file_path": "/repo/a.py"}), ("Read", {"file_path": "/repo/b.py", "offset": 10})),
    ),
    # Kimi K3 (XTML): a tools channel of calls; typed arguments, or one JSON object block.
    Fixture(
        "kimi_k3-one",
        "kimi_k3",
        'On it.<|open|>tools<|sep|><|open|>call tool="Bash" index="1"<|sep|><|open|>argument key="command" '
        'type="string"<|sep|>echo "a && b"<|close|>argument<|sep|><|open|>argument key="timeout" type="number"<|sep|>'
        "30000<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>",
        "On it.",
        (("Bash", {"command": 'echo "a && b"', "timeout": 30000}),),
    ),
    Fixture(
        "kimi_k3-parallel",
        "kimi_k3",
        'Two steps.<|open|>tools<|sep|>\n<|open|>call tool="Read" index="1"<|sep|>\n<|open|>argument key="file_path" '
        'type="string"<|sep|>/repo/x.py<|close|>argument<|sep|>\n<|close|>call<|sep|>\n<|open|>call tool="TodoWrite" '
        'index="2"<|sep|>\n<|open|>json type="object"<|sep|>{"todos": [{"content": "fix x.py", "status": "pending"}]}'
        "<|close|>json<|sep|>\n<|close|>call<|sep|>\n<|close|>tools<|sep|>",
        "Two steps.",
        (
            ("Read", {"file_path": "/repo/x.py"}),
            ("TodoWrite", {"todos": [{"content": "fix x.py", "status": "pending"}]}),
        ),
    ),
    # MiniMax M2: <invoke>s with <parameter>s inside one <minimax:tool_call> block.
    Fixture(
        "minimax_m2-one",
        "minimax_m2",
        'Let me look.\n<minimax:tool_call>\n<invoke name="Read">\n<parameter name="file_path">/repo/app.py'
        '</parameter>\n<parameter name="limit">50</parameter>\n</invoke>\n</minimax:tool_call>',
        "Let me look.",
        (("Read", {"file_path": "/repo/app.py", "limit": 50}),),
    ),
    Fixture(
        "minimax_m2-parallel",
        "minimax_m2",
        'Searching two places.\n<minimax:tool_call>\n<invoke name="Grep">\n<parameter name="pattern">TODO</parameter>\n'
        '<parameter name="path">/repo/src</parameter>\n</invoke>\n<invoke name="TodoWrite">\n<parameter name="todos">'
        '[{"content": "triage TODOs", "status": "in_progress"}]</parameter>\n</invoke>\n</minimax:tool_call>',
        "Searching two places.",
        (
            ("Grep", {"pattern": "TODO", "path": "/repo/src"}),
            ("TodoWrite", {"todos": [{"content": "triage TODOs", "status": "in_progress"}]}),
        ),
    ),
    # Mistral: no end marker. Tokenizer v11+ writes NAME[ARGS]{...} per call ([CALL_ID]ID with v11's ids);
    # v3 (Mistral-7B-Instruct-v0.3) writes one JSON list.
    Fixture(
        "mistral-one",
        "mistral",
        'I\'ll read it.[TOOL_CALLS]Read[ARGS]{"file_path": "/repo/main.py"}',
        "I'll read it.",
        (("Read", {"file_path": "/repo/main.py"}),),
    ),
    Fixture(
        "mistral-call-id",
        "mistral",
        'Reading.[TOOL_CALLS]Read[CALL_ID]aB3dE5gH7[ARGS]{"file_path": "/repo/main.py"}',
        "Reading.",
        (("Read", {"file_path": "/repo/main.py"}),),
    ),
    Fixture(
        "mistral-parallel",
        "mistral",
        'Both at once.[TOOL_CALLS]Read[ARGS]{"file_path": "/repo/a}b.py"}[TOOL_CALLS]Bash[ARGS]'
        '{"command": "ls", "timeout": 5000}',
        "Both at once.",
        (("Read", {"file_path": "/repo/a}b.py"}), ("Bash", {"command": "ls", "timeout": 5000})),
    ),
    Fixture(
        "mistral-v3-list",
        "mistral",
        '[TOOL_CALLS] [{"name": "Read", "arguments": {"file_path": "/repo/a.py"}}, '
        '{"name": "Grep", "arguments": {"pattern": "[a-z]+", "path": "/repo"}, "id": "Xy12Ab34C"}]',
        "",
        (("Read", {"file_path": "/repo/a.py"}), ("Grep", {"pattern": "[a-z]+", "path": "/repo"})),
    ),
    # LFM2 (pythonic): a Python list of calls, usually before the text that explains it.
    Fixture(
        "pythonic-one",
        "pythonic",
        '<|tool_call_start|>[Read(file_path="/repo/main.py", limit=20)]<|tool_call_end|>Reading the entry point.',
        "Reading the entry point.",
        (("Read", {"file_path": "/repo/main.py", "limit": 20}),),
    ),
    Fixture(
        "pythonic-parallel",
        "pythonic",
        'Planning first.<|tool_call_start|>[TodoWrite(todos=[{"content": "read code", "status": "pending", '
        '"urgent": true}]), Grep(pattern="import os", path="/repo")]<|tool_call_end|>',
        "Planning first.",
        (
            ("TodoWrite", {"todos": [{"content": "read code", "status": "pending", "urgent": True}]}),
            ("Grep", {"pattern": "import os", "path": "/repo"}),
        ),
    ),
    # Gemma 4: call:NAME{key:value} with <|"|> around strings, one <|tool_call> block per call.
    Fixture(
        "gemma4-one",
        "gemma4",
        'I\'ll list the folder.<|tool_call>call:Bash{command:<|"|>ls -la {src,tests}<|"|>,timeout:10000}<tool_call|>',
        "I'll list the folder.",
        (("Bash", {"command": "ls -la {src,tests}", "timeout": 10000}),),
    ),
    Fixture(
        "gemma4-parallel",
        "gemma4",
        'Two reads.<|tool_call>call:Read{file_path:<|"|>/repo/a.py<|"|>}<tool_call|><|tool_call>call:TodoWrite'
        '{todos:[{content:<|"|>check a.py<|"|>,status:<|"|>pending<|"|>}]}<tool_call|>',
        "Two reads.",
        (
            ("Read", {"file_path": "/repo/a.py"}),
            ("TodoWrite", {"todos": [{"content": "check a.py", "status": "pending"}]}),
        ),
    ),
    # FunctionGemma: call:NAME{key:value} with <escape> around strings.
    Fixture(
        "function_gemma-one",
        "function_gemma",
        "<start_function_call>call:Read{file_path:<escape>/repo/main.py<escape>,limit:40}<end_function_call>",
        "",
        (("Read", {"file_path": "/repo/main.py", "limit": 40}),),
    ),
    Fixture(
        "function_gemma-parallel",
        "function_gemma",
        "Two commands.<start_function_call>call:Bash{command:<escape>git log -3<escape>}<end_function_call>"
        "<start_function_call>call:Bash{command:<escape>git diff --stat<escape>,timeout:9000}<end_function_call>",
        "Two commands.",
        (("Bash", {"command": "git log -3"}), ("Bash", {"command": "git diff --stat", "timeout": 9000})),
    ),
    # LongCat: Flash Chat writes JSON in <longcat_tool_call>; Flash Lite writes GLM-style key/value pairs.
    Fixture(
        "longcat-json",
        "longcat",
        'Let me read that.\n<longcat_tool_call>\n{"name": "Read", "arguments": {"file_path": "/repo/x.md"}}\n'
        "</longcat_tool_call>",
        "Let me read that.",
        (("Read", {"file_path": "/repo/x.md"}),),
    ),
    Fixture(
        "longcat-parallel",
        "longcat",
        "Checking.\n<longcat_tool_call>Bash\n<longcat_arg_key>command</longcat_arg_key>\n<longcat_arg_value>"
        "uname -a</longcat_arg_value>\n</longcat_tool_call>\n<longcat_tool_call>Read\n<longcat_arg_key>file_path"
        "</longcat_arg_key>\n<longcat_arg_value>/etc/os-release</longcat_arg_value>\n<longcat_arg_key>limit"
        "</longcat_arg_key>\n<longcat_arg_value>5</longcat_arg_value>\n</longcat_tool_call>",
        "Checking.",
        (("Bash", {"command": "uname -a"}), ("Read", {"file_path": "/etc/os-release", "limit": 5})),
    ),
    # MiniCPM5: <function name=...> blocks; values holding <, & or newlines in CDATA.
    Fixture(
        "minicpm5-one",
        "minicpm5",
        'Writing the helper.\n<function name="Write"><param name="file_path">/repo/util.py</param>'
        f'<param name="content"><![CDATA[{PY_SOURCE}]]></param></function>',
        "Writing the helper.",
        (("Write", {"file_path": "/repo/util.py", "content": PY_SOURCE}),),
    ),
    Fixture(
        "minicpm5-parallel",
        "minicpm5",
        'Reading both.\n<function name="Read"><param name="file_path">/repo/a.py</param><param name="limit">30'
        '</param></function>\n<function name="Read"><param name="file_path">/repo/b.py</param></function>',
        "Reading both.",
        (("Read", {"file_path": "/repo/a.py", "limit": 30}), ("Read", {"file_path": "/repo/b.py"})),
    ),
    # Muse Spark (XML_ATEM): <atem:invoke>s inside one <atem:function_calls> block; values JSON where they parse.
    Fixture(
        "muse_spark-one",
        "muse_spark",
        '<atem:function_calls><atem:invoke name="Bash"><atem:parameter name="command">git status</atem:parameter>'
        '<atem:parameter name="timeout">60000</atem:parameter></atem:invoke></atem:function_calls>',
        "",
        (("Bash", {"command": "git status", "timeout": 60000}),),
    ),
    Fixture(
        "muse_spark-parallel",
        "muse_spark",
        'Two lookups.<atem:function_calls>\n<atem:invoke name="Grep">\n<atem:parameter name="pattern">class \\w+'
        '</atem:parameter>\n<atem:parameter name="-i">false</atem:parameter>\n</atem:invoke>\n<atem:invoke name="Read">'
        '\n<atem:parameter name="file_path">/repo/models.py</atem:parameter>\n</atem:invoke>\n</atem:function_calls>',
        "Two lookups.",
        (("Grep", {"pattern": "class \\w+", "-i": False}), ("Read", {"file_path": "/repo/models.py"})),
    ),
]

# What closes one call, where that is not the block's end marker.
CALL_CLOSERS = {
    "kimi_k2": "<|tool_call_end|>",
    "kimi_k3": "<|close|>call<|sep|>",
    "minimax_m2": "</invoke>",
    "muse_spark": "</atem:invoke>",
}


def mlx_module(fmt: str) -> Any:
    return importlib.import_module(f"mlx_lm.tool_parsers.{fmt}")


def run(fixture: Fixture, pieces: list[str]) -> list[StreamEvent]:
    return feed_all(MlxToolStream.for_module(fixture.fmt, TOOLS), pieces)


def expected(fixture: Fixture) -> tuple[str, list[Call]]:
    return fixture.content, list(fixture.calls)


def test_every_mlx_format_has_fixtures_of_one_and_of_parallel_calls() -> None:
    shipped = mlx_parser_names()
    assert {"json_tools", "qwen3_coder", "glm47", "kimi_k2", "minimax_m2", "mistral", "pythonic"} <= shipped
    for fmt in shipped:
        counts = sorted(len(f.calls) for f in FIXTURES if f.fmt == fmt)
        assert counts and counts[0] == 1 and counts[-1] >= 2, f"mlx-lm's {fmt} needs fixtures: {counts}"


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.id for f in FIXTURES])
def test_format_in_one_piece_gives_the_text_and_the_calls(fixture: Fixture) -> None:
    assert summary(run(fixture, [fixture.text])) == expected(fixture)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.id for f in FIXTURES])
def test_format_character_by_character_gives_the_same(fixture: Fixture) -> None:
    events = run(fixture, list(fixture.text))
    assert summary(events) == expected(fixture)
    marker = mlx_module(fixture.fmt).tool_call_start
    assert not any(isinstance(e, TextDelta) and marker in e.text for e in events)


@settings(max_examples=300, deadline=None)
@given(fixture=st.sampled_from(FIXTURES), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_format_in_random_chunks_gives_the_same(fixture: Fixture, cuts: list[int]) -> None:
    points = sorted({cut % (len(fixture.text) + 1) for cut in cuts})
    pieces = [fixture.text[a:b] for a, b in zip([0, *points], [*points, len(fixture.text)], strict=True)]
    assert summary(run(fixture, pieces)) == expected(fixture)


def ready_points(fixture: Fixture) -> list[int]:
    """Where, in the fixture's text, each call's text is complete."""
    if fixture.fmt == "mistral" and "[ARGS]" in fixture.text:
        starts = [m.start() for m in re.finditer(re.escape("[TOOL_CALLS]"), fixture.text)]
        return [*starts[1:], len(fixture.text)]
    closer = CALL_CLOSERS.get(fixture.fmt) or mlx_module(fixture.fmt).tool_call_end
    if not closer:  # a single JSON list: every call is complete when it closes
        return [len(fixture.text)] * len(fixture.calls)
    ends = [m.end() for m in re.finditer(re.escape(closer), fixture.text)]
    return ends if len(ends) == len(fixture.calls) else [ends[0]] * len(fixture.calls)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.id for f in FIXTURES])
def test_each_call_is_emitted_as_soon_as_its_text_is_complete(fixture: Fixture) -> None:
    stream = MlxToolStream.for_module(fixture.fmt, TOOLS)
    points = ready_points(fixture)
    fed = seen = 0
    for point in sorted(set(points)):
        seen += count_calls(stream.feed(fixture.text[fed : point - 1]))
        assert seen == sum(p < point for p in points), f"a call came out before its text was complete ({point})"
        seen += count_calls(stream.feed(fixture.text[point - 1 : point]))
        fed = point
        assert seen == sum(p <= point for p in points), f"a complete call was held back (at {point})"


def count_calls(events: list[StreamEvent]) -> int:
    return sum(isinstance(e, ToolCallDelta) for e in events)


# ---- output that is not a complete call comes back as text, and nothing crashes -----------------------------


def stream_all(fmt: str, pieces: list[str]) -> tuple[list[StreamEvent], list[StreamEvent]]:
    """Events while feeding, and those `finish` adds."""
    stream = MlxToolStream.for_module(fmt, TOOLS)
    fed = [event for piece in pieces for event in stream.feed(piece)]
    return fed, stream.finish()


def test_block_cut_short_by_the_end_of_the_reply_is_text_not_a_call() -> None:
    cut = "Running it.\n<tool_call>\n<function=Bash>\n<parameter=command>\nrm -rf build\n</parameter>\n</function>\n"
    fed, finished = stream_all("qwen3_coder", [cut])
    assert summary(fed + finished) == (cut, [])


def test_mistral_marker_without_a_call_is_text_at_once() -> None:
    fed, finished = stream_all("mistral", ["Use the [TOOL_CALLS] token, then a name."])
    assert summary(fed) == ("Use the [TOOL_CALLS] token, then a name.", [])
    assert finished == []


def test_mistral_call_cut_short_is_text() -> None:
    fed, finished = stream_all("mistral", ['[TOOL_CALLS]Write[ARGS]{"file_path": "/a", "content": "par'])
    assert summary(fed + finished) == ('[TOOL_CALLS]Write[ARGS]{"file_path": "/a", "content": "par', [])


def test_parser_that_raises_on_garbage_gives_the_text_back() -> None:
    # mlx-lm's longcat parser raises AttributeError on a body with no argument keys.
    text = "<longcat_tool_call>???</longcat_tool_call> and on"
    fed, finished = stream_all("longcat", [text])
    assert summary(fed + finished) == (text, [])


def test_text_after_a_call_flows_on() -> None:
    fed, _ = stream_all("gemma4", ['<|tool_call>call:Read{file_path:<|"|>/a<|"|>}<tool_call|>\n\nDone. Next'])
    assert summary(fed) == ("Done. Next", [("Read", {"file_path": "/a"})])


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "Read", "parameters": {"file_path": "/a"}}',  # Llama's word for the arguments
        '{"name": "Read", "arguments": "{\\"file_path\\": \\"/a\\"}"}',  # the arguments as a JSON string
    ],
)
def test_json_tools_arguments_in_other_spellings_are_kept(body: str) -> None:
    fed, _ = stream_all("json_tools", [f"<tool_call>{body}</tool_call>"])
    assert summary(fed) == ("", [("Read", {"file_path": "/a"})])


# ---- as the OpenAI stream a client reads ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if len(f.calls) > 1], ids=lambda f: f.id)
def test_parallel_calls_reach_an_openai_client_as_indexed_deltas_in_order(fixture: Fixture) -> None:
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    from adapters.mlx_server.output import OutputAssembler
    from adapters.mlx_server.responses import ChatStream

    assembler = OutputAssembler(None, MlxToolStream.for_module(fixture.fmt, TOOLS))
    chunks = ChatStream("m")
    state = ChatCompletionStreamState(input_tools=TOOLS)  # type: ignore[arg-type]
    first_call_at = None
    for at, char in enumerate(fixture.text):
        for event in assembler.feed(char):
            state.handle_chunk(ChatCompletionChunk.model_validate(chunks.event_chunk(event)))
            if first_call_at is None and isinstance(event, ToolCallDelta):
                first_call_at = at
    for event in assembler.finish():
        state.handle_chunk(ChatCompletionChunk.model_validate(chunks.event_chunk(event)))
    state.handle_chunk(ChatCompletionChunk.model_validate(chunks.chunk({}, "tool_calls")))

    message = state.get_final_completion().choices[0].message
    calls = message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == list(fixture.calls)
    assert len({c.id for c in calls}) == len(calls)
    assert (message.content or "") == fixture.content
    assert first_call_at == ready_points(fixture)[0] - 1  # with the character that completed the first call
