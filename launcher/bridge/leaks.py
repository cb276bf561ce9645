"""Tool calls a backend's model writes as text turned into calls, streamed and whole alike.

Some servers pass a model's tool-call markup through as plain content instead of `tool_calls`, and
small models often skip the markup altogether: a ```json block, or a bare JSON object, naming a tool.
Without this, Claude Code would show the call and never run the tool. The answer is watched as it
streams: text streams live until something could start a call (a format's marker, a fence opener at
a line's start, a `{` at a line's start); from there it is held until it can be decided (the fence
or the object closed, or the answer ended), then released as text or turned into calls. A fence that
is not a call is released as soon as it is known not to be one, so the rest of the answer is not held.

Formats' markup is parsed by `adapters.tool_parsers.parse_any`; fenced and bare JSON by
`adapters.tool_parsers.recover`, which also checks every call against the request's tools (names and
`input_schema`). Text that looks like a failed call stays text; the log says why, and `report` tells
the request log (`tool_parse_failed`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from adapters.tool_parsers import parse_any
from adapters.tool_parsers._json_repair import BracketScanner
from adapters.tool_parsers._types import Malformed, ParsedOutput, ToolCall
from adapters.tool_parsers.recover import NOT_A_CALL, Toolbox, Verdict, json_verdict

log = logging.getLogger("anyclaude.bridge")

# Opening markers of the formats `parse_any` knows (hermes/qwen, qwen3-coder, mistral, llama 3, harmony).
MARKERS = ("<tool_call>", "<function=", "[TOOL_CALLS]", "<|python_tag|>", "<|channel|>", "<|start|>")
_LONGEST = max(len(m) for m in MARKERS)
# Markup that is a call attempt: held text holding one of these but giving no call is a failed call.
_CALL_MARKUP = ("<tool_call>", "<function=", "[TOOL_CALLS]", "<|python_tag|>", "to=functions.")
# A fence opener, `{` or `[` at a line's start (the text searched starts with "\n" when it is at one).
_LINE_OPENER = re.compile(r"\n[ \t]*(```|\{|\[)")
_FENCE_CLOSE = re.compile(r"\n[ \t]*```")
_NON_SPACE = re.compile(r"\S")
# Fences whose language could hold a call; any other (python, bash, ...) is code, released at once.
_CALL_LANGUAGES = frozenset({"", "json", "jsonc", "json5", "tool_call", "tool_code", "tool", "javascript", "js", "xml"})

Report = Callable[[int, bool], None]  # (calls recovered from text, whether text looked like a failed call)


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


def _could_open(line: str) -> bool:
    """Whether an unfinished line (from its start) could still become a fence opener or a `{` line."""
    return line.lstrip(" \t") in ("", "`", "``")


def _json_head(buf: str) -> tuple[int, str]:
    """Where a held `{`/`[` value starts, and what follows its opening brackets (a call needs a quoted key)."""
    start = min(i for i in (buf.find("{"), buf.find("[")) if i >= 0)
    return start, buf[start:].lstrip("{[ \t\r\n")


_TOOL_CALL = "<tool_call>"


def _unclosed_call(held: str) -> str | None:
    """The JSON after a `<tool_call>` the answer never closed, when it is whole as it is (servers that drop
    special tokens drop the closing tag; a cut answer's JSON is never repaired into a call here)."""
    start = held.find(_TOOL_CALL)
    if start < 0 or "</tool_call>" in held:
        return None
    body = held[start + len(_TOOL_CALL) :].strip()
    try:
        json.loads(body)
    except ValueError:
        return None
    return body


Mode = Literal["text", "fence", "code", "json", "marker"]


class TextCallWatch:
    """Finds tool calls in one answer's text, fed piece by piece; `finish` once at the end.

    Args:
        tools: the request's tools (OpenAI or Anthropic shape). None: the tool list is unknown, only
            formats' markup is parsed and any name is taken.
        report: called once at `finish` with the number of calls recovered and whether text looked like
            a failed call.
    """

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None, report: Report | None = None) -> None:
        self._tools = Toolbox(tools) if tools else None
        self._report = report
        self._buf = ""
        self._mode: Mode = "text"
        self._line_start = True  # the buffer's first character starts a line
        self._scanner: BracketScanner | None = None
        self._searched = 0  # where the next search for a fence's end starts
        self._after_call = False
        self.recovered = 0
        self.failed = False

    # ----- the interface

    def feed(self, text: str) -> list[str | ToolCallFound]:
        self._buf += text
        out: list[str | ToolCallFound] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[str | ToolCallFound]:
        out: list[str | ToolCallFound] = []
        buf, mode = self._buf, self._mode
        self._buf, self._mode = "", "text"
        if mode == "marker":
            self._marked(buf, out)
        elif mode == "fence":
            opener_end = buf.find("\n")
            body = "" if opener_end < 0 else buf[opener_end + 1 :]
            self._decided(buf, self._verdict(body), out)
        elif mode == "json":
            self._decided(buf, self._verdict(buf), out)
        elif buf:
            out.append(buf)
        if self._report is not None:
            report, self._report = self._report, None
            report(self.recovered, self.failed)
        return out

    # ----- steps: each consumes what the buffer allows; True when another may get further

    def _step(self, out: list[str | ToolCallFound]) -> bool:
        if self._mode == "text":
            return self._text_step(out)
        if self._mode == "fence":
            return self._fence_step(out)
        if self._mode == "code":
            return self._code_step(out)
        if self._mode == "json":
            return self._json_step(out)
        return False  # marker: held to the end of the answer

    def _emit(self, out: list[str | ToolCallFound], text: str) -> None:
        if self._after_call:  # whitespace that only separated a call from what follows is dropped
            text = text.lstrip()
            self._after_call = not text
        if text:
            out.append(text)

    def _text_step(self, out: list[str | ToolCallFound]) -> bool:
        buf = self._buf
        cut, mode = len(buf), None
        for marker in MARKERS:
            index = buf.find(marker, 0, cut + len(marker))
            if 0 <= index < cut:
                cut, mode = index, "marker"
        if self._tools is not None:
            prefix = "\n" if self._line_start else ""
            found = _LINE_OPENER.search(prefix + buf)
            if found is not None and found.start() - len(prefix) + 1 < cut:
                cut = found.start() - len(prefix) + 1  # the opener's line start: its indent is held too
                mode = "fence" if found.group(1) == "`" * 3 else "json"
        if mode is not None:
            self._emit(out, buf[:cut])
            self._buf, self._mode = buf[cut:], mode  # type: ignore[assignment]
            self._scanner, self._searched = None, 0
            return True
        hold = _partial_marker(buf)
        if self._tools is not None:
            line_at = buf.rfind("\n") + 1
            if (line_at or self._line_start) and _could_open(buf[line_at:]):
                hold = max(hold, len(buf) - line_at)
        keep = len(buf) - hold
        if keep:
            self._emit(out, buf[:keep])
            self._line_start = buf[keep - 1] == "\n"
            self._buf = buf[keep:]
        return False

    def _fence_step(self, out: list[str | ToolCallFound]) -> bool:
        buf = self._buf
        opener_end = buf.find("\n")
        if opener_end < 0:
            return False
        language = buf[:opener_end].strip().removeprefix("```").strip().lower()
        if language not in _CALL_LANGUAGES:
            return self._release_as_code(out, opener_end + 1)
        body_start = opener_end + 1
        first = _NON_SPACE.search(buf, body_start)
        if first is not None and first.group() not in "{[<":
            return self._release_as_code(out, body_start)
        close = _FENCE_CLOSE.search(buf, max(self._searched, opener_end))
        if close is None:
            self._searched = max(opener_end, len(buf) - 8)
            return False
        raw, self._buf = buf[: close.end()], buf[close.end() :]
        self._mode, self._line_start = "text", False
        self._decided(raw, self._verdict(buf[body_start : close.start()]), out)
        return True

    def _release_as_code(self, out: list[str | ToolCallFound], upto: int) -> bool:
        """A fence that cannot hold a call: its text flows on until the fence closes (`upto` is a line start)."""
        self._emit(out, self._buf[:upto])
        self._buf, self._mode, self._searched, self._line_start = self._buf[upto:], "code", 0, True
        return True

    def _code_step(self, out: list[str | ToolCallFound]) -> bool:
        buf = self._buf
        # A closing fence stands at a line's start: the held text's first line counts only when it is one (text
        # already released may have begun that line: "}```" closes nothing, however the stream was split).
        prefix = "\n" if self._line_start else ""
        close = _FENCE_CLOSE.search(prefix + buf)
        if close is not None:
            end = close.end() - len(prefix)
            self._emit(out, buf[:end])
            self._buf, self._mode, self._line_start = buf[end:], "text", False
            return True
        line_at = buf.rfind("\n")
        # A last line that could still become the closing fence waits; everything before it flows.
        keep = line_at if line_at >= 0 and _could_open(buf[line_at + 1 :]) else len(buf)
        if line_at < 0 and self._line_start and _could_open(buf):
            keep = 0
        self._emit(out, buf[:keep])
        if keep:
            self._line_start = buf[keep - 1] == "\n"
        self._buf = buf[keep:]
        return False

    def _json_step(self, out: list[str | ToolCallFound]) -> bool:
        buf = self._buf
        if self._scanner is None:
            # Decided early when the value cannot be a call: after its brackets must come a quoted key.
            start, head = _json_head(buf)
            if not head:
                return False
            if head[0] not in "\"'":
                upto = len(buf) - len(head)
                self._emit(out, buf[:upto])
                self._buf, self._mode, self._line_start = buf[upto:], "text", False
                return True
            self._scanner = BracketScanner(start)
        end = self._scanner.end(buf)
        if end is None:
            return False
        raw, self._buf = buf[:end], buf[end:]
        self._mode, self._line_start, self._scanner = "text", False, None
        self._decided(raw, self._verdict(raw), out)
        return True

    # ----- decisions

    def _verdict(self, body: str) -> Verdict:
        if self._tools is None:
            return NOT_A_CALL
        if any(marker in body for marker in MARKERS):
            found: list[str | ToolCallFound] = []
            self._marked(body, found, count=False)
            calls = [ToolCall(f.id, f.name, f.arguments) for f in found if isinstance(f, ToolCallFound)]
            return Verdict(calls) if calls else NOT_A_CALL
        return json_verdict(body, self._tools)

    def _decided(self, raw: str, verdict: Verdict, out: list[str | ToolCallFound]) -> None:
        if verdict.failure is not None:
            self._failed(verdict.failure)
        if not verdict.calls:
            self._emit(out, raw)
            return
        self._found(verdict.calls, out)

    def _found(self, calls: list[ToolCall], out: list[str | ToolCallFound]) -> None:
        self.recovered += len(calls)
        out.extend(ToolCallFound(call.id, call.name, call.arguments) for call in calls)
        self._after_call = True
        log.info("recovered %d tool call(s) the model wrote as text", len(calls))

    def _failed(self, reason: str) -> None:
        self.failed = True
        # The reason names the tool and its keys, never the arguments (they may hold a user's files).
        log.warning("a tool call the model wrote as text is shown as text: %s", reason)

    def _marked(self, held: str, out: list[str | ToolCallFound], count: bool = True) -> None:
        """Text from a format's marker to the end of the answer: `parse_any`, then checked against the tools."""
        parsed = parse_any(held)
        calls = parsed.tool_calls
        reason = "its tool-call markup cannot be parsed"
        if not calls and self._tools is not None and (whole := _unclosed_call(held)) is not None:
            verdict = json_verdict(whole, self._tools)
            calls, reason = verdict.calls, verdict.failure or reason
            if calls:
                parsed = ParsedOutput(held[: held.find(_TOOL_CALL)], calls)
        if self._tools is not None and calls:
            try:
                calls = [self._tools.call(call.name, call.arguments) for call in calls]
            except Malformed as exc:
                self._failed(str(exc))
                self._emit(out, held)
                return
        if not calls:
            if any(markup in held for markup in _CALL_MARKUP):
                self._failed(reason)
            self._emit(out, parsed.content)
            return
        self._emit(out, parsed.content)
        if count:
            self._found(calls, out)
        else:
            out.extend(ToolCallFound(call.id, call.name, call.arguments) for call in calls)


# The name the bridge used when only formats' markers were watched.
MarkerWatch = TextCallWatch


def make_text_parser(tools: Sequence[Mapping[str, Any]] | None = None, report: Report | None = None) -> TextToolParser:
    """A fresh parser for one response's tool calls written as text."""
    return TextCallWatch(tools, report)
