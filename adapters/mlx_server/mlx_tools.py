"""mlx-lm's own tool-call parser (attached to its TokenizerWrapper) behind our streaming-parser interface.

mlx-lm knows a tool-call format per model family: a start and an end marker and a function that
turns the text between them into `{"name", "arguments"}` (or a list of them). Text before a start
marker flows on; a possible partial marker at the end of a piece is held back, so raw markup is
never sent as text and then taken back.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from adapters.mlx_server.stops import partial_suffix_length
from adapters.tool_parsers import StreamEvent, TextDelta, ToolCall, ToolCallDelta

log = logging.getLogger("anyclaude.mlx_server")

ParseFn = Callable[[str, Any], Any]


class MlxToolStream:
    """Streaming parser for one generation; `feed` deltas, then `finish` once."""

    def __init__(self, start: str, end: str, parse: ParseFn, tools: Sequence[dict[str, Any]] | None) -> None:
        self._start = start
        self._end = end
        self._parse = parse
        self._tools = list(tools) if tools else None
        self._buffer = ""
        self._inside = False

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, tools: Sequence[dict[str, Any]] | None) -> MlxToolStream | None:
        """The stream for a tokenizer that has tool calling, else None."""
        if not getattr(tokenizer, "has_tool_calling", False) or tokenizer.tool_parser is None:
            return None
        start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
        if not isinstance(start, str) or not start:
            return None
        return cls(start, end if isinstance(end, str) else "", tokenizer.tool_parser, tools)

    def feed(self, delta: str) -> list[StreamEvent]:
        self._buffer += delta
        events: list[StreamEvent] = []
        while True:
            if not self._inside:
                at = self._buffer.find(self._start)
                if at < 0:
                    keep = partial_suffix_length(self._buffer, (self._start,))
                    cut = len(self._buffer) - keep
                    _text(events, self._buffer[:cut])
                    self._buffer = self._buffer[cut:]
                    return events
                _text(events, self._buffer[:at])
                self._buffer = self._buffer[at + len(self._start) :]
                self._inside = True
            if not self._end:
                return events  # the call runs to the end of the generation
            at = self._buffer.find(self._end)
            if at < 0:
                return events
            body, self._buffer = self._buffer[:at], self._buffer[at + len(self._end) :]
            self._inside = False
            events.extend(self._calls(body))

    def finish(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            events.extend(self._calls(rest))
        else:
            _text(events, rest)
        return events

    def _calls(self, body: str) -> list[StreamEvent]:
        try:
            parsed = self._parse(body, self._tools)
        except (ValueError, KeyError, TypeError) as exc:
            # Malformed or cut short: give the text back rather than lose it.
            log.warning("tool call returned as text: %s", exc)
            return [TextDelta(self._start + body + self._end)]
        items = parsed if isinstance(parsed, list) else [parsed]
        events: list[StreamEvent] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                log.warning("tool call returned as text: parser gave %r", item)
                return [TextDelta(self._start + body + self._end)]
            arguments = item.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            events.append(ToolCallDelta(ToolCall(new_call_id(), item["name"], text)))
        return events


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _text(events: list[StreamEvent], text: str) -> None:
    if text:
        events.append(TextDelta(text))
