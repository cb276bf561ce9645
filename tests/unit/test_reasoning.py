"""Reasoning splitter: <think> blocks out of content, complete and streamed at every split."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.reasoning import ReasoningDelta, ReasoningEvent, ReasoningSplitter, split_reasoning
from adapters.tool_parsers import TextDelta


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    reasoning: str
    content: str
    starts_in_reasoning: bool = False
    start: str = "<think>"
    end: str = "</think>"


CASES = [
    Case(
        "think-then-answer",
        "<think>\nLet me add.\n2 + 2 = 4\n</think>\n\nThe answer is 4.",
        "Let me add.\n2 + 2 = 4",
        "The answer is 4.",
    ),
    Case("opened-in-prompt", "Let me add.\n</think>\n\nThe answer is 4.", "Let me add.", "The answer is 4.", True),
    Case(
        "no-reasoning",
        "Just <b>text</b>, a < b and <thinking> too.\n",
        "",
        "Just <b>text</b>, a < b and <thinking> too.\n",
    ),
    Case("unclosed", "<think>still going <thi", "still going <thi", ""),
    Case("opened-in-prompt-unclosed", "all of it is reasoning </thin", "all of it is reasoning </thin", "", True),
    Case("empty-block", "<think>\n\n</think>\n\nHi", "", "Hi"),
    Case("leading-whitespace", "\n <think>x</think> y", "x", "y"),
    Case("unicode", "<think>世界 é 🎉</think>Ça va ? 世界", "世界 é 🎉", "Ça va ? 世界"),
    Case(
        "tool-call-after",
        '<think>need a tool</think>\n<tool_call>\n{"name": "f"}\n</tool_call>',
        "need a tool",
        '<tool_call>\n{"name": "f"}\n</tool_call>',
    ),
    Case("custom-tags", "◁think▷plan◁/think▷ done", "plan", "done", start="◁think▷", end="◁/think▷"),
]


def run(case: Case, pieces: list[str]) -> list[ReasoningEvent]:
    splitter = ReasoningSplitter(case.start, case.end, starts_in_reasoning=case.starts_in_reasoning)
    events: list[ReasoningEvent] = []
    for piece in pieces:
        events += splitter.feed(piece)
    return events + splitter.finish()


def joined(events: list[ReasoningEvent]) -> tuple[str, str]:
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, content


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_split_whole_text(case: Case) -> None:
    assert joined(run(case, [case.text])) == (case.reasoning, case.content)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_streaming_at_every_split_matches_and_never_shows_a_tag(case: Case) -> None:
    chunkings = [[case.text[:cut], case.text[cut:]] for cut in range(len(case.text) + 1)] + [list(case.text)]
    for pieces in chunkings:
        events = run(case, pieces)
        assert joined(events) == (case.reasoning, case.content), pieces
        for event in events:
            assert case.start not in event.text
            assert case.end not in event.text


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_streaming_random_chunkings(case: Case, cuts: list[int]) -> None:
    points = sorted({cut % (len(case.text) + 1) for cut in cuts})
    pieces = [case.text[a:b] for a, b in zip([0, *points], [*points, len(case.text)], strict=True)]
    assert joined(run(case, pieces)) == (case.reasoning, case.content)


def test_reasoning_streams_before_the_end_tag() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<think>step one, ") == [ReasoningDelta("step one,")]
    assert splitter.feed("step two</th") == [ReasoningDelta(" step two")]
    assert splitter.feed("ink>\n\nAnswer") == [TextDelta("Answer")]
    assert splitter.finish() == []


def test_split_reasoning_defaults() -> None:
    assert split_reasoning("<think>a</think>b") == ("a", "b")
    assert split_reasoning("a</think>b", starts_in_reasoning=True) == ("a", "b")
    assert split_reasoning("a</think>b") == ("", "a</think>b")
