"""Hermes (Qwen and others): `<tool_call>{"name": ..., "arguments": ...}</tool_call>`."""

from __future__ import annotations

from adapters.tool_parsers._calls import json_calls
from adapters.tool_parsers._regions import Region, TagRegion
from adapters.tool_parsers._types import ToolCall
from adapters.tool_parsers.qwen3_coder import FUNCTION_OPEN, xml_calls

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


def _unfenced(body: str) -> str:
    """The body without a ```json fence around it (small models fence the JSON inside the tags)."""
    text = body.strip()
    if not (text.startswith("```") and text.endswith("```") and "\n" in text):
        return body
    return text[text.index("\n") + 1 : -3]


def _tool_call_block(raw: str) -> list[ToolCall]:
    body = _unfenced(raw.removeprefix(TOOL_CALL_OPEN).removesuffix(TOOL_CALL_CLOSE))
    # Qwen3-Coder writes XML inside <tool_call>, other Qwen models JSON; either is accepted in both formats.
    return xml_calls(body) if FUNCTION_OPEN in body else json_calls(body)


def tool_call_region() -> Region:
    """A `<tool_call>...</tool_call>` block holding JSON or Qwen3-Coder XML calls."""
    return TagRegion(TOOL_CALL_CLOSE, _tool_call_block)
