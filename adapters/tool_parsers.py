"""Turn model output text into OpenAI-style tool calls, for a whole text or incrementally while streaming.

Pure Python on purpose: the MLX server and the Anthropic bridge both use it, and the bridge must not import mlx.

Every format is parsed by its streaming parser; `parse` feeds the whole text at once, so a streamed generation
and a complete one always give the same content and calls. Malformed markup comes back as text, with a warning
on the `anyclaude.tools` logger.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

logger = logging.getLogger("anyclaude.tools")


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


class _Malformed(ValueError):
    """Markup that looks like a tool call but cannot be turned into one; the message says why."""


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# ---------------------------------------------------------------------------------------------------------------
# JSON: strict first, then unambiguous repairs


def _reject_constant(name: str) -> object:
    # NaN and Infinity would make json.dumps write arguments that are not valid JSON.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}
_CLOSERS = {"{": "}", "[": "]"}


def _drop_trailing_comma(out: list[str]) -> None:
    k = len(out) - 1
    while k >= 0 and out[k].isspace():
        k -= 1
    if k >= 0 and out[k] == ",":
        del out[k]


def _repair_structure(text: str) -> str | None:
    """Fix trailing commas, Python literals, missing final closers and stray final closers, or give up."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "}]":
            if not stack:
                if text[i:].strip(" \t\r\n}]"):
                    return None
                break
            if stack.pop() != ch:
                return None
            _drop_trailing_comma(out)
        elif ch.isalpha():
            end = i
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            out.append(_PY_LITERALS.get(text[i:end], text[i:end]))
            i = end
            continue
        else:
            in_string = ch == '"'
        out.append(ch)
        i += 1
    if in_string:
        return None
    for closer in reversed(stack):
        _drop_trailing_comma(out)
        out.append(closer)
    return "".join(out)


def _load_json(text: str) -> object:
    """Decode JSON, repairing it when the fix is unambiguous; raises _Malformed otherwise."""
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        reason = f"invalid JSON: {exc}"
    candidate = text
    # Single quotes are only swapped when the text has no double quotes, so no string can be cut in two.
    if '"' not in candidate and "\\" not in candidate:
        candidate = candidate.replace("'", '"')
    repaired = _repair_structure(candidate.strip())
    if repaired is not None:
        try:
            return _DECODER.decode(repaired)
        except ValueError:
            pass
    raise _Malformed(reason)


def _call_from_object(obj: object) -> ToolCall:
    """Build a call from `{"name": ..., "arguments"|"parameters": ...}` (optionally wrapped in "function")."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict):
        raise _Malformed("a tool call must be a JSON object")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Malformed("the tool call has no name")
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters")
    return _make_call(name, args)


def _make_call(name: str, args: object) -> ToolCall:
    if args is None or (isinstance(args, str) and not args.strip()):
        args = {}
    elif isinstance(args, str):
        args = _load_json(args)
    if not isinstance(args, dict):
        raise _Malformed(f"the arguments of {name!r} are not a JSON object")
    return ToolCall(_new_call_id(), name.strip(), json.dumps(args, ensure_ascii=False))


def _json_calls(body: str) -> list[ToolCall]:
    """One or more call objects (or a list of them) in a row."""
    text = body.strip()
    if not text:
        raise _Malformed("the tool call is empty")
    values: list[object] = []
    try:
        pos = 0
        while pos < len(text):
            value, pos = _DECODER.raw_decode(text, pos)
            values.append(value)
            while pos < len(text) and text[pos] in " \t\r\n,;":
                pos += 1
    except ValueError:
        values = [_load_json(text)]
    objects = [item for value in values for item in (value if isinstance(value, list) else [value])]
    if not objects:
        raise _Malformed("the tool call list is empty")
    return [_call_from_object(obj) for obj in objects]


class _BracketScanner:
    """Finds where a JSON object or array ends, fed a growing text; strings may contain brackets."""

    def __init__(self, start: int) -> None:
        self._pos = start
        self._depth = 0
        self._in_string = self._escaped = False

    def end(self, text: str) -> int | None:
        """Index just past the closing bracket of the value that starts at `start`, or None if not yet closed."""
        for i in range(self._pos, len(text)):
            ch = text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        self._pos = len(text)
        return None


# ---------------------------------------------------------------------------------------------------------------
# Qwen3-Coder XML calls: <function=NAME><parameter=P>VALUE</parameter>...</function>

_FUNCTION_OPEN = "<function="
_FUNCTION_CLOSE = "</function>"
_PARAMETER_OPEN = "<parameter="
_PARAMETER_CLOSE = "</parameter>"


def _parameter_value(raw: str) -> object:
    value = raw.removeprefix("\n").removesuffix("\n")
    try:
        parsed = _DECODER.decode(value)
    except ValueError:
        return value
    return value if isinstance(parsed, str) else parsed


def _xml_parameters(body: str) -> dict[str, object]:
    params: dict[str, object] = {}
    pos = body.find(_PARAMETER_OPEN)
    while pos >= 0:
        name_end = body.find(">", pos)
        if name_end < 0:
            raise _Malformed("a <parameter=...> tag is not closed")
        name = body[pos + len(_PARAMETER_OPEN) : name_end].strip()
        value_start = name_end + 1
        close = body.find(_PARAMETER_CLOSE, value_start)
        # A missing </parameter> ends the value at the next parameter (or at the end of the function).
        next_open = body.find(_PARAMETER_OPEN, value_start)
        value_end = close if close >= 0 else (next_open if next_open >= 0 else len(body))
        params[name] = _parameter_value(body[value_start:value_end])
        pos = body.find(_PARAMETER_OPEN, value_end)
    return params


def _xml_calls(body: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    pos = body.find(_FUNCTION_OPEN)
    while pos >= 0:
        name_end = body.find(">", pos)
        if name_end < 0:
            raise _Malformed("a <function=...> tag is not closed")
        name = body[pos + len(_FUNCTION_OPEN) : name_end].strip()
        if not name:
            raise _Malformed("a <function=...> tag has no name")
        close = body.find(_FUNCTION_CLOSE, name_end)
        end = close if close >= 0 else len(body)
        calls.append(_make_call(name, _xml_parameters(body[name_end + 1 : end])))
        pos = body.find(_FUNCTION_OPEN, end)
    if not calls:
        raise _Malformed("no <function=...> in the tool call")
    return calls


# ---------------------------------------------------------------------------------------------------------------
# Streaming machinery shared by every format


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


def _find_first(text: str, markers: tuple[str, ...], start: int = 0) -> tuple[int, str | None]:
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


def _rescan_from(text: str, markers: tuple[str, ...]) -> int:
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
        except _Malformed as exc:
            self._reject(raw, str(exc))
            return
        for call in calls:
            self._sink.call(call)


class _StreamParser:
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


# ---------------------------------------------------------------------------------------------------------------
# Formats whose calls are regions opened by a marker inside otherwise plain text: hermes, qwen3_coder, mistral


class _Region(Protocol):
    def end(self, buf: str) -> int | None:
        """Given the buffer from the opening marker on (it only grows), where the region ends, if known yet."""

    def calls(self, raw: str) -> list[ToolCall]: ...

    def calls_at_eof(self, raw: str) -> list[ToolCall]: ...


class _TagRegion:
    """`OPEN ... CLOSE`; unterminated at the end of the output means the output was cut: returned as text."""

    def __init__(self, close: str, parse: Callable[[str], list[ToolCall]]) -> None:
        self._close = close
        self._parse = parse
        self._searched = 0

    def end(self, buf: str) -> int | None:
        index = buf.find(self._close, max(self._searched, 1))
        if index < 0:
            self._searched = _rescan_from(buf, (self._close,))
            return None
        return index + len(self._close)

    def calls(self, raw: str) -> list[ToolCall]:
        return self._parse(raw)

    def calls_at_eof(self, raw: str) -> list[ToolCall]:
        raise _Malformed(f"{raw[:20]!r}... is not terminated by {self._close!r}")


_TOOL_CALL_OPEN = "<tool_call>"
_TOOL_CALL_CLOSE = "</tool_call>"


def _tool_call_block(raw: str) -> list[ToolCall]:
    body = raw.removeprefix(_TOOL_CALL_OPEN).removesuffix(_TOOL_CALL_CLOSE)
    # Qwen3-Coder writes XML inside <tool_call>, other Qwen models JSON; either is accepted in both formats.
    return _xml_calls(body) if _FUNCTION_OPEN in body else _json_calls(body)


_MISTRAL_MARKER = "[TOOL_CALLS]"
_MISTRAL_NAMED = re.compile(r"([\w.\-]+)(?:\[CALL_ID\][\w\-]*)?\[ARGS\]\s*")
_MISTRAL_HEAD_CHARS = re.compile(r"[\w.\-\[\]]*")


class _MistralRegion:
    """`[TOOL_CALLS][{...}, ...]` or `[TOOL_CALLS]NAME[ARGS]{...}`; the JSON value's closing bracket ends it."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._scanner: _BracketScanner | None = None
        self._json_start = 0

    def end(self, buf: str) -> int | None:
        if self._scanner is None:
            head = self._read_head(buf)
            if head == "wait":
                return None
            if head == "invalid":
                return len(_MISTRAL_MARKER)  # only the marker: it comes back as text, the rest is parsed again
        assert self._scanner is not None
        return self._scanner.end(buf)

    def _read_head(self, buf: str) -> Literal["wait", "json", "invalid"]:
        """Find where the JSON starts, or decide it cannot, using only what the buffer holds so far."""
        start = len(_MISTRAL_MARKER)
        while start < len(buf) and buf[start].isspace():
            start += 1
        if start == len(buf):
            return "wait"
        if buf[start] in "[{":
            self._json_start, self._scanner = start, _BracketScanner(start)
            return "json"
        named = _MISTRAL_NAMED.match(buf, start)
        if named is None:
            head = _MISTRAL_HEAD_CHARS.match(buf, start)
            # A character no NAME[CALL_ID]ID[ARGS] head can contain decides it: later text cannot change that.
            return "wait" if head is not None and head.end() == len(buf) else "invalid"
        if named.end() == len(buf):
            return "wait"
        if buf[named.end()] != "{":
            return "invalid"
        self._name = named.group(1)
        self._json_start, self._scanner = named.end(), _BracketScanner(named.end())
        return "json"

    def calls(self, raw: str) -> list[ToolCall]:
        if self._scanner is None:
            raise _Malformed(f"{_MISTRAL_MARKER} is not followed by a JSON list or NAME[ARGS]")
        payload = raw[self._json_start :]
        if self._name is not None:
            return [_make_call(self._name, _load_json(payload))]
        value = _load_json(payload)
        objects = value if isinstance(value, list) else [value]
        if not objects:
            raise _Malformed("the tool call list is empty")
        return [_call_from_object(obj) for obj in objects]

    def calls_at_eof(self, raw: str) -> list[ToolCall]:
        # Mistral has no closing marker: the end of the output closes the call (a missing bracket is repaired).
        return self.calls(raw)


@dataclass(frozen=True)
class _RegionFormat:
    name: str
    openers: dict[str, Callable[[], _Region]]

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(self.openers)


class _RegionStream(StreamingToolParser):
    def __init__(self, fmt: _RegionFormat) -> None:
        super().__init__(fmt.name)
        self._fmt = fmt
        self._markers = fmt.markers
        self._buf = ""
        self._region: _Region | None = None

    def feed(self, delta: str) -> list[StreamEvent]:
        self._buf += delta
        while self._step():
            pass
        return self._sink.take()

    def finish(self) -> list[StreamEvent]:
        if self._region is not None:
            self._deliver(self._buf, self._region.calls_at_eof)
        else:
            self._sink.text(self._buf)
        self._buf, self._region = "", None
        self._sink.finish()
        return self._sink.take()

    def _step(self) -> bool:
        if self._region is None:
            index, marker = _find_first(self._buf, self._markers)
            if marker is None:
                safe = len(self._buf) - _partial_marker_len(self._buf, self._markers)
                self._sink.text(self._buf[:safe])
                self._buf = self._buf[safe:]
                return False
            self._sink.text(self._buf[:index])
            self._buf = self._buf[index:]
            self._region = self._fmt.openers[marker]()
        end = self._region.end(self._buf)
        if end is None:
            return False
        raw, self._buf = self._buf[:end], self._buf[end:]
        self._deliver(raw, self._region.calls)
        self._region = None
        return True


# ---------------------------------------------------------------------------------------------------------------
# harmony (gpt-oss): <|start|>assistant<|channel|>CHANNEL [to=functions.NAME] [<|constrain|>json]<|message|>BODY END

_H_START = "<|start|>"
_H_CHANNEL = "<|channel|>"
_H_MESSAGE = "<|message|>"
_H_CONSTRAIN = "<|constrain|>"
_H_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_H_MARKERS = (_H_START, _H_CHANNEL, _H_MESSAGE, _H_CONSTRAIN, *_H_ENDS)
_H_CALL_ENDS = (*_H_ENDS, _H_START, _H_CHANNEL)
_H_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_H_CHANNEL_NAME = re.compile(r"<\|channel\|>\s*(\w+)")

_HarmonyState = Literal["text", "header", "content", "reasoning", "call"]


class _HarmonyStream(StreamingToolParser):
    def __init__(self) -> None:
        super().__init__("harmony")
        self._buf = ""
        self._state: _HarmonyState = "text"
        self._header = ""
        self._call_name = ""
        self._searched = 0
        self._reasoning: list[str] = []

    @property
    def reasoning(self) -> str:
        return "\n\n".join(part.strip() for part in self._reasoning if part.strip())

    def feed(self, delta: str) -> list[StreamEvent]:
        self._buf += delta
        while self._step():
            pass
        return self._sink.take()

    def finish(self) -> list[StreamEvent]:
        if self._state == "header":
            self._reject(self._buf, "a message header is not followed by <|message|>")
        elif self._state == "call":
            # <|call|> is a stop token, so servers often cut it off: the end of the output closes the call.
            self._deliver(self._header + self._buf, self._parse_call)
        else:
            self._flow(self._buf)
        self._buf, self._state = "", "text"
        self._sink.finish()
        return self._sink.take()

    def _step(self) -> bool:
        if self._state == "header":
            return self._step_header()
        if self._state == "call":
            return self._step_call()
        return self._step_flow()

    def _flow(self, text: str) -> None:
        if self._state == "reasoning":
            self._reasoning[-1] += text
        else:
            self._sink.text(text)

    def _step_flow(self) -> bool:
        index, marker = _find_first(self._buf, _H_MARKERS)
        if marker is None:
            safe = len(self._buf) - _partial_marker_len(self._buf, _H_MARKERS)
            self._flow(self._buf[:safe])
            self._buf = self._buf[safe:]
            return False
        self._flow(self._buf[:index])
        self._buf = self._buf[index:]
        if marker in (_H_START, _H_CHANNEL, _H_CONSTRAIN):
            self._end_message()
            self._state = "header"
            return True
        self._buf = self._buf[len(marker) :]
        if marker == _H_MESSAGE and self._state != "text":
            self._flow(marker)  # a stray <|message|> inside a message is just text
        elif marker == _H_MESSAGE:
            self._sink.markup()
            self._state = "content"
        else:
            self._end_message()
            self._state = "text"
        return True

    def _end_message(self) -> None:
        if self._state == "content":
            self._sink.paragraph()
        else:
            self._sink.markup()

    def _step_header(self) -> bool:
        index = self._buf.find(_H_MESSAGE)
        if index < 0:
            return False
        header = self._buf[:index]
        self._buf = self._buf[index + len(_H_MESSAGE) :]
        recipient = _H_RECIPIENT.search(header)
        channel = _H_CHANNEL_NAME.search(header)
        if recipient:
            self._state, self._searched = "call", 0
            self._header = header + _H_MESSAGE
            self._call_name = recipient.group(1).removeprefix("functions.")
        elif channel and channel.group(1) == "analysis":
            self._state = "reasoning"
            self._reasoning.append("")
        else:
            self._state = "content"
        return True

    def _step_call(self) -> bool:
        index, marker = _find_first(self._buf, _H_CALL_ENDS, self._searched)
        if marker is None:
            self._searched = _rescan_from(self._buf, _H_CALL_ENDS)
            return False
        end = index + len(marker) if marker in _H_ENDS else index
        raw = self._header + self._buf[:end]
        self._buf = self._buf[end:]
        self._deliver(raw, self._parse_call)
        self._state = "text"
        return True

    def _parse_call(self, raw: str) -> list[ToolCall]:
        body = raw[len(self._header) :]
        for end in _H_ENDS:
            body = body.removesuffix(end)
        return [_make_call(self._call_name, _load_json(body) if body.strip() else {})]


# ---------------------------------------------------------------------------------------------------------------
# llama3_json: the whole output is `[<|python_tag|>]{"name": ..., "parameters": ...}` (several: `;` or newlines)

_PYTHON_TAG = "<|python_tag|>"
_LLAMA_SEPARATORS = " \t\r\n;}]"  # a stray closing bracket after a call is a common slip, not text


class _Llama3Stream(StreamingToolParser):
    """Holds output that starts like a call until it is certain; anything else flows out as plain text."""

    def __init__(self) -> None:
        super().__init__("llama3_json")
        self._buf = ""
        self._mode: Literal["undecided", "text", "json"] = "undecided"
        self._tagged = False
        self._pos = 0
        self._scanner: _BracketScanner | None = None
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
        if _PYTHON_TAG.startswith(stripped) and stripped != _PYTHON_TAG:
            return  # nothing yet, or a partial tag
        offset = len(self._buf) - len(stripped)
        if stripped.startswith(_PYTHON_TAG):
            self._mode, self._tagged, self._pos = "json", True, offset + len(_PYTHON_TAG)
        elif stripped.startswith("{"):
            self._mode, self._pos = "json", offset
        else:
            self._as_text(None)

    def _advance(self) -> None:
        while self._mode == "json":
            while self._pos < len(self._buf) and self._buf[self._pos] in _LLAMA_SEPARATORS:
                self._pos += 1
            if self._pos == len(self._buf):
                return
            if self._scanner is None:
                if self._buf[self._pos] != "{":
                    self._as_text("text follows the JSON")
                    return
                self._scanner = _BracketScanner(self._pos)
            end = self._scanner.end(self._buf)
            if end is None:
                return
            self._take_call(self._buf[self._pos : end])
            self._pos, self._scanner = end, None

    def _finish_json(self) -> None:
        rest = self._buf[self._pos :]
        if rest.strip(_LLAMA_SEPARATORS):
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
            value = _load_json(text)
        except _Malformed as exc:
            self._as_text(str(exc) if self._tagged or '"name"' in text else None)
            return
        # Without the tag, a JSON answer such as {"name": "Alice"} must not become a call to "Alice".
        if not self._tagged and not (isinstance(value, dict) and ({"parameters", "arguments"} & value.keys())):
            self._as_text(None)
            return
        try:
            self._calls.append(_call_from_object(value))
        except _Malformed as exc:
            self._as_text(str(exc))

    def _as_text(self, reason: str | None) -> None:
        """Give up on calls: the whole held output is plain text from here on."""
        if reason is not None:
            logger.warning("llama3_json tool call returned as text: %s", reason)
        self._mode = "text"
        self._sink.text(self._buf)
        self._buf, self._calls = "", []


# ---------------------------------------------------------------------------------------------------------------
# Registry and detection


def _tool_call_region() -> _Region:
    return _TagRegion(_TOOL_CALL_CLOSE, _tool_call_block)


def _bare_function_region() -> _Region:
    return _TagRegion(_FUNCTION_CLOSE, _xml_calls)


_HERMES = _RegionFormat("hermes", {_TOOL_CALL_OPEN: _tool_call_region})
_QWEN3_CODER = _RegionFormat("qwen3_coder", {_TOOL_CALL_OPEN: _tool_call_region, _FUNCTION_OPEN: _bare_function_region})
_MISTRAL = _RegionFormat("mistral", {_MISTRAL_MARKER: _MistralRegion})

PARSERS: dict[str, ToolParser] = {
    "hermes": _StreamParser("hermes", lambda: _RegionStream(_HERMES)),
    "qwen3_coder": _StreamParser("qwen3_coder", lambda: _RegionStream(_QWEN3_CODER)),
    "harmony": _StreamParser("harmony", _HarmonyStream),
    "llama3_json": _StreamParser("llama3_json", _Llama3Stream),
    "mistral": _StreamParser("mistral", lambda: _RegionStream(_MISTRAL)),
}


def get_parser(name: str) -> ToolParser:
    """Return the parser registered under `name`.

    Raises:
        KeyError: no such parser; the message lists the known names.
    """
    try:
        return PARSERS[name]
    except KeyError:
        raise KeyError(f"unknown tool parser {name!r}; known: {', '.join(sorted(PARSERS))}") from None


_TEMPLATE_MARKERS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("harmony", lambda t: _H_CHANNEL in t or "to=functions." in t),
    ("mistral", lambda t: _MISTRAL_MARKER in t),
    ("qwen3_coder", lambda t: _FUNCTION_OPEN in t and _PARAMETER_OPEN in t),
    ("hermes", lambda t: _TOOL_CALL_OPEN in t),
    ("llama3_json", lambda t: _PYTHON_TAG in t or ("ipython" in t and "<|start_header_id|>" in t)),
)


def _parser_for_model_type(model_type: str) -> str | None:
    kind = model_type.lower()
    if kind.startswith("gpt_oss"):
        return "harmony"
    if kind.startswith("qwen3") and "coder" in kind:
        return "qwen3_coder"
    if kind.startswith("qwen"):
        return "hermes"
    if kind.startswith(("mistral", "ministral", "mixtral", "pixtral", "devstral", "magistral")):
        return "mistral"
    if kind.startswith("llama"):
        return "llama3_json"
    return None


def detect_parser(chat_template: str | None, model_type: str | None = None) -> ToolParser | None:
    """Choose the parser for a model from markers in its chat template, else from its `model_type`.

    Args:
        chat_template: the tokenizer's chat template text, if any.
        model_type: `model_type` from the model's config.json (a name containing "coder" picks qwen3_coder).

    Returns:
        The parser, or None when neither says which format the model writes.
    """
    if chat_template:
        for name, matches in _TEMPLATE_MARKERS:
            if matches(chat_template):
                return PARSERS[name]
    found = _parser_for_model_type(model_type) if model_type else None
    return PARSERS[found] if found else None


_ANY_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("harmony", (_H_CHANNEL, _H_MESSAGE, _H_START)),
    ("mistral", (_MISTRAL_MARKER,)),
    ("qwen3_coder", (_TOOL_CALL_OPEN, _FUNCTION_OPEN)),
    ("llama3_json", ("{",)),
)


def parse_any(text: str) -> ParsedOutput:
    """Parse text from a backend whose format is unknown, trying every format whose markers it contains.

    Returns:
        The first parse that finds tool calls; otherwise the first format's parse (harmony drops its
        reasoning channel from content), or the text unchanged when no format's markers occur.
    """
    first: ParsedOutput | None = None
    for name, markers in _ANY_ORDER:
        if not any(marker in text for marker in markers):
            continue
        parsed = PARSERS[name].parse(text)
        if parsed.tool_calls:
            return parsed
        first = first or parsed
    return first or ParsedOutput(text, [])


__all__ = [
    "PARSERS",
    "ParsedOutput",
    "StreamEvent",
    "StreamingToolParser",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolParser",
    "detect_parser",
    "get_parser",
    "parse_any",
]
