"""Pure pieces of our MLX server: stop-sequence holdback, sampling settings, output assembly."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.mlx_server.mlx_tools import MlxToolStream
from adapters.mlx_server.output import CollectedOutput, OutputAssembler, ReasoningPiece
from adapters.mlx_server.sampling import SamplingParams, parse_logit_bias
from adapters.mlx_server.stops import StopMatcher, partial_suffix_length
from adapters.reasoning import ReasoningSplitter
from adapters.tool_parsers import TextDelta, ToolCallDelta

# ---- stop sequences -------------------------------------------------------------------------


def run_stops(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    matcher = StopMatcher(stops)
    sent = []
    for piece in pieces:
        result = matcher.feed(piece)
        sent.append(result.text)
        if result.stopped:
            return sent, True
    sent.append(matcher.flush())
    return sent, False


def test_partial_stop_is_held_back_until_decided() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("abcE").text == "abc"
    assert matcher.feed("N").text == ""
    result = matcher.feed("D tail")
    assert result == type(result)("", True)


def test_held_text_is_released_when_it_is_not_a_stop() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("xE").text == "x"
    assert matcher.feed("Nx").text == "ENx"
    assert matcher.feed("EN").text == ""
    assert matcher.flush() == "EN"


def test_earliest_of_several_stops_wins() -> None:
    sent, stopped = run_stops(["one two three"], ["three", "two"])
    assert stopped and "".join(sent) == "one "


def test_no_stops_passes_everything_through() -> None:
    assert run_stops(["a", "b"], []) == (["a", "b", ""], False)


def test_partial_suffix_length_finds_longest_prefix() -> None:
    assert partial_suffix_length("xxab", ["abc", "b"]) == 2
    assert partial_suffix_length("xx", ["abc"]) == 0


@given(
    text=st.text(alphabet="abcE ND", max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
    stop=st.sampled_from(["END", "E", "aa", "D a"]),
)
def test_any_split_sends_exactly_the_text_before_the_first_stop(text: str, cuts: list[int], stop: str) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    sent, stopped = run_stops(pieces, [stop])
    at = text.find(stop)
    assert "".join(sent) == (text if at < 0 else text[:at])
    assert stopped == (at >= 0)
    # Never sent then retracted: every prefix sent so far is a prefix of the final output.
    assert all("".join(sent).startswith("".join(sent[:i])) for i in range(len(sent)))


# ---- sampling settings ----------------------------------------------------------------------


def test_greedy_defaults_map_to_mlx_lm_off_values() -> None:
    params = SamplingParams()
    assert params.sampler_kwargs() == {"temp": 0.0, "top_p": 0.0, "top_k": 0, "min_p": 0.0}
    assert params.processor_kwargs()["repetition_penalty"] is None
    assert params.processor_kwargs()["logit_bias"] is None


def test_penalties_share_one_context_window() -> None:
    params = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        repetition_penalty=1.3,
        repetition_context_size=64,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias={5: 2.0},
    )
    assert params.sampler_kwargs()["top_p"] == 0.9
    assert params.processor_kwargs() == {
        "logit_bias": {5: 2.0},
        "repetition_penalty": 1.3,
        "repetition_context_size": 64,
        "presence_penalty": 0.5,
        "presence_context_size": 64,
        "frequency_penalty": 0.25,
        "frequency_context_size": 64,
    }


def test_neutral_penalties_are_off() -> None:
    kwargs = SamplingParams(repetition_penalty=1.0, presence_penalty=0.0).processor_kwargs()
    assert kwargs["repetition_penalty"] is None and kwargs["presence_penalty"] is None


def test_processors_built_by_mlx_lm_accept_the_mapping() -> None:
    from adapters.mlx_server.sampling import build_sampling

    sampler, processors = build_sampling(SamplingParams(repetition_penalty=1.2, logit_bias={1: 1.0}))
    assert callable(sampler) and len(processors) == 2


def test_logit_bias_keys_become_token_ids() -> None:
    assert parse_logit_bias({"7": 3}, vocab_size=10) == {7: 3.0}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        parse_logit_bias({"10": 1}, vocab_size=10)
    with pytest.raises(ValueError, match="not a token id"):
        parse_logit_bias({"x": 1}, vocab_size=10)


# ---- output: reasoning and tool calls -------------------------------------------------------


def fake_parse(text: str, tools: Any) -> dict[str, Any]:
    return dict(json.loads(text))


def feed_all(assembler: OutputAssembler, pieces: list[str]) -> CollectedOutput:
    out = CollectedOutput()
    for piece in pieces:
        out.add(assembler.feed(piece))
    out.add(assembler.finish())
    return out


def test_mlx_tool_stream_never_sends_markup_as_text() -> None:
    stream = MlxToolStream("<tool_call>", "</tool_call>", fake_parse, tools=None)
    events = []
    for piece in ["Let me look.<tool", '_call>{"name": "ls", "arg', 'uments": {"p": 1}}</tool_call>', "done"]:
        events += stream.feed(piece)
    events += stream.finish()
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e.call for e in events if isinstance(e, ToolCallDelta)]
    assert text == "Let me look.done"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("ls", {"p": 1})]


def test_mlx_tool_stream_returns_malformed_calls_as_text() -> None:
    stream = MlxToolStream("<tool_call>", "</tool_call>", fake_parse, tools=None)
    events = stream.feed("<tool_call>not json</tool_call>") + stream.finish()
    assert events == [TextDelta("<tool_call>not json</tool_call>")]


def test_assembler_splits_reasoning_then_parses_tools() -> None:
    tools = MlxToolStream("<tool_call>", "</tool_call>", fake_parse, tools=None)
    assembler = OutputAssembler(ReasoningSplitter(starts_in_reasoning=True), tools)
    out = feed_all(assembler, ["I should list", " files.</th", "ink>", '<tool_call>{"name": "ls"}</tool_call>'])
    assert out.reasoning == "I should list files."
    assert out.content == ""
    assert [c.name for c in out.tool_calls] == ["ls"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_a_tool_call_straight_from_the_thinking_is_parsed_not_shown_as_thoughts(size: int) -> None:
    tools = MlxToolStream("<tool_call>", "</tool_call>", fake_parse, tools=None)
    assembler = OutputAssembler(ReasoningSplitter(starts_in_reasoning=True, exits=(tools.start_marker,)), tools)
    text = 'I need the listing.\n<tool_call>{"name": "ls"}</tool_call>'
    out = feed_all(assembler, [text[i : i + size] for i in range(0, len(text), size)])
    assert out.reasoning == "I need the listing."
    assert out.content == ""
    assert [c.name for c in out.tool_calls] == ["ls"]


def test_assembler_without_tools_or_reasoning_is_plain_text() -> None:
    assembler = OutputAssembler(None, None)
    assert assembler.feed("<tool_call>x") == [TextDelta("<tool_call>x")]
    assert not any(isinstance(e, ReasoningPiece) for e in assembler.finish())
