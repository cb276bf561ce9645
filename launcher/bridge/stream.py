"""OpenAI chat-completion chunks → Anthropic stream events: one state machine per response.

Anthropic's grammar is strict where OpenAI's is loose: blocks are opened, filled and closed one at a
time with increasing indices, while OpenAI interleaves text, reasoning and the argument fragments of
several tool calls by `index`. The first tool call streams live; any other call's fragments are held
until the response ends and then sent as whole blocks, so an interleaving backend can never produce
deltas for a block that is already closed.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from launcher.bridge.leaks import TextToolParser, ToolCallFound
from launcher.bridge.usage import Usage

log = logging.getLogger("anyclaude.bridge")

Event = dict[str, Any]


class UpstreamStreamError(Exception):
    """The backend reported an error inside its stream."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)
    block: int | None = None


class StreamTranslator:
    """Feeds OpenAI chunks in, returns the Anthropic events each one produces.

    Args:
        model: the model id the client asked for, echoed back (Claude Code checks it).
        input_tokens: the prompt size known before the backend answers (0 when unknown); replaced by
            the backend's count when its usage arrives.
        stop_sequences: the request's, to report which one ended the text.
        parser: a streaming text tool-call parser for backends that leak calls as text, or None.
    """

    def __init__(
        self,
        model: str,
        input_tokens: int = 0,
        stop_sequences: list[str] | None = None,
        parser: TextToolParser | None = None,
    ) -> None:
        self.model = model
        self.message_id = new_id("msg")
        self.usage = Usage(input_tokens=input_tokens)
        self._stops = stop_sequences or []
        self._parser = parser
        self._open: str | None = None  # "text", "thinking" or "tool"
        self._next = 0
        self._calls: dict[int, _Call] = {}
        self._live: int | None = None  # the OpenAI index of the tool call streaming now
        self._ids: set[str] = set()
        self._tool_blocks = 0
        self._trailing: list[str] = []
        self._tail = ""
        self._finish_reason: str | None = None
        self._matched_stop: str | None = None
        self._chunks = 0

    @property
    def finished(self) -> bool:
        """True once the backend said why it stopped (a `finish_reason` arrived)."""
        return self._finish_reason is not None

    # ----- events

    def start(self) -> list[Event]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events for one chunk. Raises UpstreamStreamError for an error chunk."""
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamStreamError(f"the backend failed mid-stream: {message}")
        self.usage.update(chunk.get("usage"))
        out: list[Event] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            if isinstance(delta, dict):
                self._chunks += 1
                self._delta(delta, out)
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
                matched = choice.get("stop_reason", choice.get("matched_stop"))
                if isinstance(matched, str) and matched in self._stops:
                    self._matched_stop = matched
        return out

    def finish(self) -> list[Event]:
        """Close every block and end the message."""
        out: list[Event] = []
        if self._parser is not None:
            self._parsed(self._parser.finish(), out)
            self._parser = None
        self._close(out)
        for call in self._calls.values():
            if call.block is None:
                self._open_tool(call, out)
                self._close(out)
        if (text := "".join(self._trailing)).strip():
            self._trailing = []
            self._text(text, out, trailing=True)
            self._close(out)
        stop_reason, stop_sequence = self._stop_reason()
        self.usage.fill_output(self._chunks)
        out.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": self.usage.anthropic(),
            }
        )
        out.append({"type": "message_stop"})
        return out

    # ----- deltas

    def _delta(self, delta: dict[str, Any], out: list[Event]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._thinking(reasoning, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list) and calls:
            if self._parser is not None:  # the backend does structured calls: stop looking in text
                self._parsed(self._parser.finish(), out)
                self._parser = None
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_delta(call, position, out)
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self._parser is not None:
                self._parsed(self._parser.feed(content), out)
            else:
                self._text(content, out)

    def _parsed(self, items: list[str | ToolCallFound], out: list[Event]) -> None:
        for item in items:
            if isinstance(item, str):
                self._text(item, out)
            else:
                call = _Call(id=item.id, name=item.name, args=[item.arguments])
                self._calls[-1 - len(self._calls)] = call  # negative keys never clash with OpenAI indices
                self._open_tool(call, out)
                self._close(out)

    def _text(self, text: str, out: list[Event], trailing: bool = False) -> None:
        if not text:
            return
        if self._calls and not trailing:
            # Text after a tool call started (usually whitespace) would close a block that may still
            # get argument fragments; it is sent after the calls instead.
            self._trailing.append(text)
            return
        self._tail = (self._tail + text)[-256:]
        if self._open != "text":
            self._close(out)
            self._start({"type": "text", "text": ""}, "text", out)
        out.append(
            {"type": "content_block_delta", "index": self._next - 1, "delta": {"type": "text_delta", "text": text}}
        )

    def _thinking(self, text: str, out: list[Event]) -> None:
        if self._calls:
            return  # reasoning after a tool call has no place left in Anthropic's block order
        if self._open != "thinking":
            self._close(out)
            self._start({"type": "thinking", "thinking": "", "signature": ""}, "thinking", out)
        delta = {"type": "thinking_delta", "thinking": text}
        out.append({"type": "content_block_delta", "index": self._next - 1, "delta": delta})

    def _tool_delta(self, raw: dict[str, Any], position: int, out: list[Event]) -> None:
        index = raw.get("index", position)
        if not isinstance(index, int):
            index = position
        call = self._calls.setdefault(index, _Call())
        function: dict[str, Any] = raw["function"] if isinstance(raw.get("function"), dict) else {}
        if isinstance(raw.get("id"), str) and raw["id"] and not call.id:
            call.id = raw["id"]
        if isinstance(function.get("name"), str) and function["name"] and not call.name:
            call.name = function["name"]
        piece = function.get("arguments")
        piece = piece if isinstance(piece, str) else ""
        if self._live == index:
            if piece:
                call.args.append(piece)
                self._args_delta(piece, out)
            return
        if piece:
            call.args.append(piece)
        first_waiting = next((i for i, c in self._calls.items() if c.block is None), None)
        if self._live is None and call.name and first_waiting == index:
            self._open_tool(call, out)
            self._live = index

    def _open_tool(self, call: _Call, out: list[Event]) -> None:
        if not call.name:
            log.warning("dropping a tool call without a name from the backend")
            call.block = -1
            return
        self._close(out)
        if not call.id or call.id in self._ids:
            call.id = new_id("toolu")  # ids pair tool_use with tool_result: they must be unique
        self._ids.add(call.id)
        call.block = self._next
        self._tool_blocks += 1
        self._start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, "tool", out)
        if args := "".join(call.args):
            self._args_delta(args, out)

    def _args_delta(self, piece: str, out: list[Event]) -> None:
        delta = {"type": "input_json_delta", "partial_json": piece}
        out.append({"type": "content_block_delta", "index": self._next - 1, "delta": delta})

    def _start(self, block: dict[str, Any], kind: str, out: list[Event]) -> None:
        out.append({"type": "content_block_start", "index": self._next, "content_block": block})
        self._next += 1
        self._open = kind

    def _close(self, out: list[Event]) -> None:
        if self._open is not None:
            out.append({"type": "content_block_stop", "index": self._next - 1})
            self._open = None
            self._live = None

    def _stop_reason(self) -> tuple[str, str | None]:
        if self._finish_reason == "length":
            return "max_tokens", None
        if self._tool_blocks:
            return "tool_use", None
        if self._finish_reason == "content_filter":
            return "refusal", None
        if self._matched_stop is not None:
            return "stop_sequence", self._matched_stop
        for stop in self._stops:
            if stop and self._tail.endswith(stop):
                return "stop_sequence", stop
        return "end_turn", None
