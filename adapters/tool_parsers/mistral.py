"""Mistral: `[TOOL_CALLS][{...}, ...]` or `[TOOL_CALLS]NAME[ARGS]{...}`, with no closing marker."""

from __future__ import annotations

import re
from typing import Literal

from adapters.tool_parsers._calls import calls_from_values, make_call
from adapters.tool_parsers._json_repair import BracketScanner, load_json
from adapters.tool_parsers._types import Malformed, ToolCall

MARKER = "[TOOL_CALLS]"
_NAMED = re.compile(r"([\w.\-]+)(?:\[CALL_ID\][\w\-]*)?\[ARGS\]\s*")
_HEAD_CHARS = re.compile(r"[\w.\-\[\]]*")


class MistralRegion:
    """`[TOOL_CALLS][{...}, ...]` or `[TOOL_CALLS]NAME[ARGS]{...}`; the JSON value's closing bracket ends it."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._scanner: BracketScanner | None = None
        self._json_start = 0

    def end(self, buf: str) -> int | None:
        if self._scanner is None:
            head = self._read_head(buf)
            if head == "wait":
                return None
            if head == "invalid":
                return len(MARKER)  # only the marker: it comes back as text, the rest is parsed again
        assert self._scanner is not None
        return self._scanner.end(buf)

    def _read_head(self, buf: str) -> Literal["wait", "json", "invalid"]:
        """Find where the JSON starts, or decide it cannot, using only what the buffer holds so far."""
        start = len(MARKER)
        while start < len(buf) and buf[start].isspace():
            start += 1
        if start == len(buf):
            return "wait"
        if buf[start] in "[{":
            self._json_start, self._scanner = start, BracketScanner(start)
            return "json"
        named = _NAMED.match(buf, start)
        if named is None:
            head = _HEAD_CHARS.match(buf, start)
            # A character no NAME[CALL_ID]ID[ARGS] head can contain decides it: later text cannot change that.
            return "wait" if head is not None and head.end() == len(buf) else "invalid"
        if named.end() == len(buf):
            return "wait"
        if buf[named.end()] != "{":
            return "invalid"
        self._name = named.group(1)
        self._json_start, self._scanner = named.end(), BracketScanner(named.end())
        return "json"

    def calls(self, raw: str) -> list[ToolCall]:
        if self._scanner is None:
            raise Malformed(f"{MARKER} is not followed by a JSON list or NAME[ARGS]")
        payload = raw[self._json_start :]
        if self._name is not None:
            return [make_call(self._name, load_json(payload))]
        return calls_from_values([load_json(payload)])

    def calls_at_eof(self, raw: str) -> list[ToolCall]:
        # Mistral has no closing marker: the end of the output closes the call (a missing bracket is repaired).
        return self.calls(raw)
