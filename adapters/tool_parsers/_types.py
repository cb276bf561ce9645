"""What a tool-call parser returns, and the interface every format implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from adapters.tool_parsers._stream import StreamingToolParser


@dataclass(frozen=True)
class ToolCall:
    """One function call: `arguments` is always a JSON object as text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedOutput:
    """A complete generation split into user-visible text, tool calls and (harmony only) reasoning."""

    content: str
    tool_calls: list[ToolCall]
    reasoning: str = ""


@dataclass(frozen=True)
class TextDelta:
    """Text that is safe to show: it can no longer turn out to be tool-call markup."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A tool call, emitted once, when it is complete."""

    call: ToolCall


StreamEvent = TextDelta | ToolCallDelta


class ToolParser(Protocol):
    """One tool-call format."""

    name: str

    def parse(self, text: str) -> ParsedOutput:
        """Parse a complete generation."""
        ...

    def stream(self) -> StreamingToolParser:
        """A fresh streaming parser for one generation."""
        ...


class Malformed(ValueError):
    """Markup that looks like a tool call but cannot be turned into one; the message says why."""
