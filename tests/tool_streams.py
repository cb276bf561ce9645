"""Helpers for tests of streamed tool-call parsing: feed a stream in pieces, sum up what came out."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from adapters.tool_parsers import StreamEvent, TextDelta, ToolCallDelta

Call = tuple[str, dict[str, Any]]


def feed_all(stream: Any, pieces: Iterable[str]) -> list[StreamEvent]:
    """Every event of a tool-call stream (`feed`, `finish`) fed `pieces` one by one, then finished."""
    events: list[StreamEvent] = []
    for piece in pieces:
        events += stream.feed(piece)
    return events + stream.finish()


def calls_of(calls: Any) -> list[Call]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


def summary(events: list[StreamEvent]) -> tuple[str, list[Call]]:
    """The text and the calls (name, parsed arguments) of a stream's events."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, calls_of(e.call for e in events if isinstance(e, ToolCallDelta))
