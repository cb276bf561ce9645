"""Tool calls a backend writes as text (`<tool_call>{…}</tool_call>`) turned back into calls.

Some servers pass a model's tool-call markup through as plain content instead of `tool_calls`;
without this, Claude Code would show the markup and never run the tool. Parsing lives in
`adapters.tool_parsers` (shared with our MLX server). The backend's format is unknown here, so the
stream is watched for any format's opening marker: text before it streams live, text from it on is
held and parsed with `parse_any` when the response ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from adapters.tool_parsers import parse_any

log = logging.getLogger("anyclaude.bridge")

# Opening markers of the formats `parse_any` knows (hermes/qwen, qwen3-coder, mistral, llama 3, harmony).
MARKERS = ("<tool_call>", "<function=", "[TOOL_CALLS]", "<|python_tag|>", "<|channel|>", "<|start|>")
_LONGEST = max(len(m) for m in MARKERS)


@dataclass(frozen=True)
class ToolCallFound:
    id: str
    name: str
    arguments: str  # JSON text


class TextToolParser(Protocol):
    def feed(self, text: str) -> list[str | ToolCallFound]: ...

    def finish(self) -> list[str | ToolCallFound]: ...


def _partial_marker(text: str) -> int:
    """Length of the longest suffix of `text` that could begin a marker."""
    for size in range(min(len(text), _LONGEST - 1), 0, -1):
        tail = text[-size:]
        if any(marker.startswith(tail) for marker in MARKERS):
            return size
    return 0


class MarkerWatch:
    """Streams text until a tool-call marker shows up, then holds the rest for `parse_any`.

    A reply whose first non-blank character is `{` is held whole: llama 3 style models answer a
    call with nothing but a JSON object.
    """

    def __init__(self) -> None:
        self._held: list[str] = []
        self._holding = False
        self._pending = ""  # a possible marker prefix at the end of the streamed text
        self._started = False

    def feed(self, text: str) -> list[str | ToolCallFound]:
        if self._holding:
            self._held.append(text)
            return []
        text = self._pending + text
        self._pending = ""
        if not self._started:
            stripped = text.lstrip()
            if not stripped:
                self._pending = text
                return []
            self._started = True
            if stripped.startswith("{"):
                self._holding = True
                self._held.append(text)
                return []
        cut = min((i for i in (text.find(m) for m in MARKERS) if i >= 0), default=-1)
        if cut >= 0:
            self._holding = True
            self._held.append(text[cut:])
            return [text[:cut]] if cut else []
        keep = _partial_marker(text)
        if keep:
            self._pending = text[-keep:]
            text = text[:-keep]
        return [text] if text else []

    def finish(self) -> list[str | ToolCallFound]:
        if not self._holding:
            pending, self._pending = self._pending, ""
            return [pending] if pending else []
        held = "".join(self._held)
        self._held = []
        parsed = parse_any(held)
        out: list[str | ToolCallFound] = [parsed.content] if parsed.content else []
        out.extend(ToolCallFound(call.id, call.name, call.arguments) for call in parsed.tool_calls)
        if parsed.tool_calls:
            log.info("recovered %d tool call(s) the backend wrote as text", len(parsed.tool_calls))
        return out


def make_text_parser() -> TextToolParser:
    """A fresh parser for one response's leaked tool calls."""
    return MarkerWatch()
