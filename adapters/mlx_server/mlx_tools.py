"""mlx-lm's tool-call parsers behind our streaming-parser interface.

mlx-lm ships one module per tool-call format (`mlx_lm/tool_parsers/<name>.py`): a start marker, an end
marker ("" when the format has none) and `parse_tool_call(text, tools)`, which turns the text between the
markers into `{"name", "arguments"}` or a list of them. `MlxToolStream` feeds such a module the generated
text piece by piece. Text before a start marker flows on; a possible partial marker at the end of a piece is
held back, so raw markup is never sent as text and then taken back; whitespace that only separated text from
a call is dropped, as our own parsers do. Every call goes out as soon as its text is complete: at the block's
end marker, or where one call ends inside a block that holds several, or (Mistral, which has no end marker)
where the call's JSON closes; `mlx_boundaries` knows those places.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from adapters.mlx_server.mlx_boundaries import NOT_A_CALL, CallBoundary, boundary_for, prepare_for
from adapters.mlx_server.stops import partial_suffix_length
from adapters.tool_parsers import PARSERS, StreamEvent, ToolCall
from adapters.tool_parsers._calls import call_from_object
from adapters.tool_parsers._stream import _Sink
from adapters.tool_parsers._types import Malformed

log = logging.getLogger("anyclaude.mlx_server")

ParseFn = Callable[[str, Any], Any]


@cache
def mlx_parser_names() -> frozenset[str]:
    """The tool-call formats the installed mlx-lm ships (its `tool_parsers` modules); empty without mlx-lm.

    Found by listing the package's folder: naming them does not import mlx-lm, which takes seconds.
    """
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folders = [str(Path(location) / "tool_parsers") for location in spec.submodule_search_locations]
    return frozenset(module.name for module in pkgutil.iter_modules(folders) if not module.name.startswith("_"))


def known_tool_parsers() -> frozenset[str]:
    """Every name `--tool-parser` accepts: mlx-lm's formats, and ours for the formats mlx-lm lacks."""
    return mlx_parser_names() | frozenset(PARSERS)


class MlxToolStream:
    """Streaming parser for one generation; `feed` deltas, then `finish` once.

    Args:
        start: the marker that opens a block of tool calls.
        end: the marker that closes it; "" when the format has none.
        parse: the format's `parse_tool_call(text, tools)`.
        tools: the request's tools (OpenAI shape); some formats read argument types from them.
        name: the format's name, for log lines.
    """

    def __init__(
        self,
        start: str,
        end: str,
        parse: ParseFn,
        tools: Sequence[dict[str, Any]] | None,
        *,
        name: str = "mlx-lm",
    ) -> None:
        self.name = name
        self._start = start
        self._end = end
        self._parse = parse
        self._tools = list(tools) if tools else None
        self._sink = _Sink()
        self._buffer = ""
        self._inside = False
        self._calls_in_block = 0
        self._searched = 0  # how far the buffer was searched for an end marker, so each feed scans only new text
        self._boundary: CallBoundary | None = None

    @classmethod
    def for_module(cls, name: str, tools: Sequence[dict[str, Any]] | None) -> MlxToolStream:
        """The stream for mlx-lm's format `name` (one of `mlx_parser_names()`).

        Raises:
            ImportError: mlx-lm has no such module.
        """
        module = importlib.import_module(f"mlx_lm.tool_parsers.{name}")
        return cls(module.tool_call_start, module.tool_call_end, module.parse_tool_call, tools, name=name)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, tools: Sequence[dict[str, Any]] | None) -> MlxToolStream | None:
        """The stream for the format mlx-lm attached to a tokenizer when it loaded it, else None."""
        if not getattr(tokenizer, "has_tool_calling", False) or tokenizer.tool_parser is None:
            return None
        start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
        if not isinstance(start, str) or not start:
            return None
        parse = tokenizer.tool_parser
        # The module that defines the parser names the format (laguna reuses glm47's: the same format).
        name = str(getattr(parse, "__module__", "mlx-lm")).rpartition(".")[2]
        return cls(start, end if isinstance(end, str) else "", parse, tools, name=name)

    @property
    def start_marker(self) -> str:
        """The text that opens a tool-call block in this format."""
        return self._start

    def feed(self, delta: str) -> list[StreamEvent]:
        """Consume a piece of generated text; return the text and the calls that are now certain."""
        self._buffer += delta
        while self._step_inside() if self._inside else self._step_outside():
            pass
        return self._sink.take()

    def finish(self) -> list[StreamEvent]:
        """Flush at the end of generation; a call cut short comes back as text, never as a call."""
        rest, self._buffer = self._buffer, ""
        if not self._inside:
            self._sink.text(rest)
        elif not self._end and self._boundary is None:
            self._emit(rest)  # a format without an end marker or a known call end: the reply ends the call
        elif rest.strip() or not self._calls_in_block:
            # Unclosed: the reply was cut short (max_tokens), and a call from it would run with truncated
            # arguments.
            self._reject(self._opened() + rest, "the reply ended inside a tool call")
        self._close_block()
        self._sink.finish()
        return self._sink.take()

    def _step_outside(self) -> bool:
        """Pass on text up to a start marker; True when one opened a block."""
        at = self._buffer.find(self._start)
        if at < 0:
            cut = len(self._buffer) - partial_suffix_length(self._buffer, (self._start,))
            self._sink.text(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            return False
        self._sink.text(self._buffer[:at])
        self._buffer = self._buffer[at + len(self._start) :]
        self._inside, self._calls_in_block, self._searched = True, 0, 0
        self._boundary = boundary_for(self.name)
        return True

    def _step_inside(self) -> bool:
        """Emit the next complete call, or close the block; False when that needs more text."""
        block_end = self._find_end() if self._end else -1
        call_end = self._boundary.end(self._buffer) if self._boundary is not None else None
        if call_end == NOT_A_CALL:
            self._reject(self._opened(), "the start marker is not followed by a call")
            self._close_block()
            return True
        if call_end is not None and (block_end < 0 or call_end <= block_end):
            piece, self._buffer = self._buffer[:call_end], self._buffer[call_end:]
            self._emit(piece)
            if self._end:
                self._searched, self._boundary = 0, boundary_for(self.name)
            else:
                self._close_block()  # without an end marker, each call has its own start marker
            return True
        if block_end < 0:
            return False
        body, self._buffer = self._buffer[:block_end], self._buffer[block_end + len(self._end) :]
        if body.strip() or not self._calls_in_block:
            self._emit(body, closing=self._end)
        else:
            self._sink.markup()  # only whitespace and the end marker after the block's calls
        self._close_block()
        return True

    def _find_end(self) -> int:
        at = self._buffer.find(self._end, self._searched)
        if at < 0:
            self._searched = max(0, len(self._buffer) - len(self._end) + 1)
        return at

    def _opened(self) -> str:
        """The start marker while no call of the block used it, to give back with text that is no call."""
        return "" if self._calls_in_block else self._start

    def _close_block(self) -> None:
        self._inside, self._boundary, self._searched = False, None, 0

    def _emit(self, raw: str, closing: str = "") -> None:
        calls = self._calls(raw)
        if isinstance(calls, str):
            self._reject(self._opened() + raw + closing, calls)
            return
        self._calls_in_block += len(calls)
        for call in calls:
            self._sink.call(call)

    def _reject(self, text: str, reason: str) -> None:
        # Malformed or cut short: give the text back rather than lose it. The reason quotes model output:
        # a line, not a whole file the model was writing.
        log.warning("%s tool call returned as text: %.200s", self.name, reason)
        self._sink.text(text)

    def _calls(self, raw: str) -> list[ToolCall] | str:
        """The calls in `raw`, or why there are none."""
        try:
            parsed = self._parse(prepare_for(self.name, raw), self._tools)
        except Exception as exc:  # mlx-lm's parsers raise anything on bad model output; none may end the reply
            return f"the parser failed: {exc!r}"
        items = parsed if isinstance(parsed, list) else [parsed]
        try:  # "parameters" for "arguments" (a model writing the JSON by hand), arguments as JSON text
            calls = [call_from_object(item) for item in items]
        except Malformed:
            return f"the parser gave {parsed!r}"
        return calls or f"the parser gave {parsed!r}"
