"""Generated text -> what a client sees: reasoning, content and tool calls, piece by piece.

Order of the stages: the engine has already cut stop sequences; `<think>…</think>` is split off as
reasoning; the markers mlx-lm knows around some models' replies are dropped; what is left goes through the
model's tool-call parser, so tool markup never reaches the client as text. Streaming and non-streaming
responses use the same stages, so they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.mlx_server.mlx_tools import MlxToolStream, mlx_parser_names
from adapters.mlx_server.pool import LoadedModel
from adapters.mlx_server.stops import partial_suffix_length
from adapters.reasoning import ReasoningDelta, ReasoningSplitter
from adapters.tool_parsers import TextDelta, ToolCall, ToolCallDelta, detect_parser, get_parser


@dataclass(frozen=True)
class ReasoningPiece:
    text: str


OutputEvent = ReasoningPiece | TextDelta | ToolCallDelta


class _ToolStream(Protocol):
    def feed(self, delta: str) -> Sequence[TextDelta | ToolCallDelta]: ...

    def finish(self) -> Sequence[TextDelta | ToolCallDelta]: ...


def tool_stream_for(
    loaded: LoadedModel, tools: Sequence[dict[str, Any]] | None, forced: str | None
) -> _ToolStream | None:
    """What reads the answer text of one generation: the tool-call parser, behind a filter for the markers
    around a reply that mlx-lm knows for some tokenizers (Kimi K3's `<|open|>response<|sep|>`).

    The parser is the configured one, else mlx-lm's, else one we detect; mlx-lm's module serves every
    format it ships, also when configured or detected by us; our own parsers only the formats mlx-lm lacks
    (hermes, harmony, llama3_json). There is none when the request offers no tools (plain text is then
    never read as markup). None when there is neither parser nor filter.
    Raises KeyError when `forced` names no known parser.
    """
    parser = _tool_parser_for(loaded, tools, forced)
    markers = tuple(getattr(loaded.tokenizer, "structural_markers", None) or ())
    return _WithoutMarkers(markers, parser) if markers else parser


def _tool_parser_for(
    loaded: LoadedModel, tools: Sequence[dict[str, Any]] | None, forced: str | None
) -> _ToolStream | None:
    if not tools:
        return None
    if forced:
        return _stream_named(forced, tools)
    own = MlxToolStream.for_tokenizer(loaded.tokenizer, tools)
    if own is not None:
        return own
    detected = detect_parser(loaded.chat_template, loaded.model_type)
    return _stream_named(detected.name, tools) if detected is not None else None


def _stream_named(name: str, tools: Sequence[dict[str, Any]]) -> _ToolStream:
    if name in mlx_parser_names():
        return MlxToolStream.for_module(name, tools)
    return get_parser(name).stream()


class _WithoutMarkers:
    """Drops structural markers from answer text, then hands the text to the tool-call parser, if any.

    A marker split across pieces is held back until the next piece completes it or shows it is text.
    """

    def __init__(self, markers: tuple[str, ...], parser: _ToolStream | None) -> None:
        self._markers = markers
        self._parser = parser
        self._held = ""

    def feed(self, delta: str) -> Sequence[TextDelta | ToolCallDelta]:
        text = self._held + delta
        for marker in self._markers:
            text = text.replace(marker, "")
        keep = partial_suffix_length(text, self._markers)
        text, self._held = text[: len(text) - keep], text[len(text) - keep :]
        return self._pass(text)

    @property
    def start_marker(self) -> str | None:
        """The parser's, so a tool call started inside the thinking still ends it (`reasoning_splitter_for`)."""
        return getattr(self._parser, "start_marker", None)

    def finish(self) -> Sequence[TextDelta | ToolCallDelta]:
        held, self._held = self._held, ""
        return [*self._pass(held), *(self._parser.finish() if self._parser is not None else [])]

    def _pass(self, text: str) -> Sequence[TextDelta | ToolCallDelta]:
        if self._parser is not None:
            return self._parser.feed(text)
        return [TextDelta(text)] if text else []


def reasoning_splitter_for(
    loaded: LoadedModel, starts_in_reasoning: bool, tools: _ToolStream | None = None
) -> ReasoningSplitter | None:
    """A `<think>` splitter when the tokenizer knows reasoning markers, else None.

    With a tool stream whose format has a start marker, that marker also ends the reasoning: a model that
    calls a tool straight from its thinking gets the call parsed, not shown as thoughts.
    """
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "has_thinking", False):
        return None
    marker = getattr(tools, "start_marker", None)
    return ReasoningSplitter(
        start=tokenizer.think_start,
        end=tokenizer.think_end,
        starts_in_reasoning=starts_in_reasoning,
        exits=(marker,) if isinstance(marker, str) and marker else (),
    )


class OutputAssembler:
    """Feed the engine's text chunks; get reasoning, text and tool-call events."""

    def __init__(self, splitter: ReasoningSplitter | None, tools: _ToolStream | None) -> None:
        self._splitter = splitter
        self._tools = tools

    def feed(self, text: str) -> list[OutputEvent]:
        return self._route(self._splitter.feed(text) if self._splitter else [TextDelta(text)], final=False)

    def finish(self) -> list[OutputEvent]:
        events = self._route(self._splitter.finish() if self._splitter else [], final=False)
        return events + self._route([], final=True)

    def _route(self, pieces: Sequence[ReasoningDelta | TextDelta], *, final: bool) -> list[OutputEvent]:
        events: list[OutputEvent] = []
        for piece in pieces:
            if isinstance(piece, ReasoningDelta):
                events.append(ReasoningPiece(piece.text))
            elif self._tools is None:
                events.append(piece)
            else:
                events.extend(self._tools.feed(piece.text))
        if final and self._tools is not None:
            events.extend(self._tools.finish())
        return [e for e in events if not (isinstance(e, TextDelta | ReasoningPiece) and not e.text)]


@dataclass
class CollectedOutput:
    """A whole generation's output, for non-streaming responses."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def add(self, events: Sequence[OutputEvent]) -> None:
        for event in events:
            if isinstance(event, ReasoningPiece):
                self.reasoning += event.text
            elif isinstance(event, ToolCallDelta):
                self.tool_calls.append(event.call)
            else:
                self.content += event.text
