"""Streaming machinery shared by every format: the event sink, marker holdback, and the parser base classes."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from adapters.tool_parsers._types import (
    Malformed,
    ParsedOutput,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)

logger = logging.getLogger("anyclaude.tools")


class _Sink:
    """Collects events; drops whitespace that only separated text from removed markup."""

    def __init__(self) -> None:
        self._events: list[StreamEvent] = []
        self._pending_ws = ""
        self._after_markup = False
        self._emitted = False

    def text(self, text: str) -> None:
        if self._after_markup:
            text = text.lstrip()
            if not text:
                return
            self._after_markup = False
        full = self._pending_ws + text
        body = full.rstrip()
        # Trailing whitespace waits: if markup follows it, it is dropped instead of sent and regretted.
        self._pending_ws = full[len(body) :]
        if body:
            self._emit(body)

    def call(self, call: ToolCall) -> None:
        self._events.append(ToolCallDelta(call))
        self.markup()

    def markup(self) -> None:
        if not self._emitted:
            self._pending_ws = ""  # whitespace before leading markup is no content
        self._after_markup = True

    def paragraph(self) -> None:
        """Separate two messages' texts with a blank line, if text follows."""
        if self._emitted:
            self._pending_ws = "\n\n"
        self._after_markup = True

    def finish(self) -> None:
        if not self._after_markup and self._pending_ws:
            self._emit(self._pending_ws)
        self._pending_ws = ""

    def take(self) -> list[StreamEvent]:
        events, self._events = self._events, []
        return events

    def _emit(self, text: str) -> None:
        self._emitted = True
        last = self._events[-1] if self._events else None
        if isinstance(last, TextDelta):
            self._events[-1] = TextDelta(last.text + text)
        else:
            self._events.append(TextDelta(text))


def find_first(text: str, markers: tuple[str, ...], start: int = 0) -> tuple[int, str | None]:
    """The earliest of `markers` in `text` from `start`, and where it starts; `(len(text), None)` if none."""
    best, found = len(text), None
    for marker in markers:
        index = text.find(marker, start, best + len(marker))
        if 0 <= index < best:
            best, found = index, marker
    return best, found


def _partial_marker_len(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that could still grow into one of `markers`."""
    longest = min(max(len(m) for m in markers) - 1, len(text))
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(m.startswith(tail) for m in markers):
            return size
    return 0


def next_marker(text: str, markers: tuple[str, ...]) -> tuple[int, str | None]:
    """The first of `markers` in `text` and where it starts; with none, where text stops being safe to emit.

    Everything before the returned index is plain text; with no marker, what follows it could still grow
    into one and must wait for more input.
    """
    index, marker = find_first(text, markers)
    if marker is None:
        index = len(text) - _partial_marker_len(text, markers)
    return index, marker


def rescan_from(text: str, markers: tuple[str, ...]) -> int:
    """Where the next search for `markers` must start so that one split across feeds is still found."""
    return max(0, len(text) - max(len(m) for m in markers) + 1)


class StreamingToolParser(ABC):
    """Incremental parser for one generation: feed deltas, then call `finish` once."""

    def __init__(self, format_name: str) -> None:
        self._format_name = format_name
        self._sink = _Sink()

    @property
    def reasoning(self) -> str:
        """Reasoning text the format carries outside content (harmony's analysis channel); "" for others."""
        return ""

    @abstractmethod
    def feed(self, delta: str) -> list[StreamEvent]:
        """Consume a piece of generated text; return the events that are now certain."""

    @abstractmethod
    def finish(self) -> list[StreamEvent]:
        """Flush at the end of generation; unterminated or malformed markup comes back as text."""

    def _reject(self, raw: str, reason: str) -> None:
        logger.warning("%s tool call returned as text: %s", self._format_name, reason)
        self._sink.text(raw)

    def _deliver(self, raw: str, parse: Callable[[str], list[ToolCall]]) -> None:
        try:
            calls = parse(raw)
        except Malformed as exc:
            self._reject(raw, str(exc))
            return
        for call in calls:
            self._sink.call(call)


class SteppedStream(StreamingToolParser):
    """A streaming parser that buffers its input and consumes it in steps until one needs more text."""

    def __init__(self, format_name: str) -> None:
        super().__init__(format_name)
        self._buf = ""

    def feed(self, delta: str) -> list[StreamEvent]:
        self._buf += delta
        while self._step():
            pass
        return self._sink.take()

    @abstractmethod
    def _step(self) -> bool:
        """Consume what the buffer allows; True when another step may get further without more input."""


class StreamParser:
    """A ToolParser made from a streaming-parser factory."""

    def __init__(self, name: str, factory: Callable[[], StreamingToolParser]) -> None:
        self.name = name
        self._factory = factory

    def parse(self, text: str) -> ParsedOutput:
        """Parse a complete generation."""
        stream = self._factory()
        events = stream.feed(text) + stream.finish()
        content = "".join(e.text for e in events if isinstance(e, TextDelta))
        calls = [e.call for e in events if isinstance(e, ToolCallDelta)]
        return ParsedOutput(content, calls, stream.reasoning)

    def stream(self) -> StreamingToolParser:
        """A fresh streaming parser for one generation."""
        return self._factory()

    def __repr__(self) -> str:
        return f"<ToolParser {self.name}>"
