"""llama3_json: the whole output is `[<|python_tag|>]{"name": ..., "parameters": ...}` (several: `;` or newlines)."""

from __future__ import annotations

from typing import Literal

from adapters.tool_parsers._calls import call_from_object
from adapters.tool_parsers._json_repair import BracketScanner, load_json
from adapters.tool_parsers._stream import StreamingToolParser, logger
from adapters.tool_parsers._types import Malformed, StreamEvent, ToolCall

PYTHON_TAG = "<|python_tag|>"
_SEPARATORS = " \t\r\n;}]"  # a stray closing bracket after a call is a common slip, not text


class Llama3Stream(StreamingToolParser):
    """Holds output that starts like a call until it is certain; anything else flows out as plain text."""

    def __init__(self) -> None:
        super().__init__("llama3_json")
        self._buf = ""
        self._mode: Literal["undecided", "text", "json"] = "undecided"
        self._tagged = False
        self._pos = 0
        self._scanner: BracketScanner | None = None
        self._calls: list[ToolCall] = []

    def feed(self, delta: str) -> list[StreamEvent]:
        if self._mode == "text":
            self._sink.text(delta)
            return self._sink.take()
        self._buf += delta
        if self._mode == "undecided":
            self._decide()
        if self._mode == "json":
            self._advance()
        return self._sink.take()

    def finish(self) -> list[StreamEvent]:
        if self._mode == "json":
            self._advance()
        if self._mode == "json":
            self._finish_json()
        elif self._mode == "undecided":
            self._sink.text(self._buf)
        self._buf, self._mode = "", "text"
        self._sink.finish()
        return self._sink.take()

    def _decide(self) -> None:
        stripped = self._buf.lstrip()
        if PYTHON_TAG.startswith(stripped) and stripped != PYTHON_TAG:
            return  # nothing yet, or a partial tag
        offset = len(self._buf) - len(stripped)
        if stripped.startswith(PYTHON_TAG):
            self._mode, self._tagged, self._pos = "json", True, offset + len(PYTHON_TAG)
        elif stripped.startswith("{"):
            self._mode, self._pos = "json", offset
        else:
            self._as_text(None)

    def _advance(self) -> None:
        while self._mode == "json":
            while self._pos < len(self._buf) and self._buf[self._pos] in _SEPARATORS:
                self._pos += 1
            if self._pos == len(self._buf):
                return
            if self._scanner is None:
                if self._buf[self._pos] != "{":
                    self._as_text("text follows the JSON")
                    return
                self._scanner = BracketScanner(self._pos)
            end = self._scanner.end(self._buf)
            if end is None:
                return
            self._take_call(self._buf[self._pos : end])
            self._pos, self._scanner = end, None

    def _finish_json(self) -> None:
        rest = self._buf[self._pos :]
        if rest.strip(_SEPARATORS):
            self._take_call(rest)  # an object still open at the end: repaired if only closers are missing
        if self._mode != "json":
            return
        if not self._calls:
            self._as_text("nothing follows <|python_tag|>" if self._tagged else None)
            return
        for call in self._calls:
            self._sink.call(call)

    def _take_call(self, text: str) -> None:
        try:
            value = load_json(text)
        except Malformed as exc:
            self._as_text(str(exc) if self._tagged or '"name"' in text else None)
            return
        # Without the tag, a JSON answer such as {"name": "Alice"} must not become a call to "Alice".
        if not self._tagged and not (isinstance(value, dict) and ({"parameters", "arguments"} & value.keys())):
            self._as_text(None)
            return
        try:
            self._calls.append(call_from_object(value))
        except Malformed as exc:
            self._as_text(str(exc))

    def _as_text(self, reason: str | None) -> None:
        """Give up on calls: the whole held output is plain text from here on."""
        if reason is not None:
            logger.warning("llama3_json tool call returned as text: %s", reason)
        self._mode = "text"
        self._sink.text(self._buf)
        self._buf, self._calls = "", []
