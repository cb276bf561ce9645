"""OpenAI chat-completion chunks → Anthropic stream events: one state machine per response.

Anthropic's grammar is strict where OpenAI's is loose: blocks are opened, filled and closed one at a
time with increasing indices, while OpenAI interleaves text, reasoning and the argument fragments of
several tool calls. Text and thinking stream live; tool calls are collected (`toolcalls`) and sent as
whole blocks when the response ends, after their arguments were checked, so neither an interleaving
backend nor one that writes broken JSON can produce events a client fails to parse. The chat layer
sends `ping`s while calls are being collected, so the client's stream watchdog stays fed.

Reasoning that arrives after a call began becomes a thinking block where it arrives, before the calls.
Two things a backend may get wrong are put right here, as the API would send them: a stop sequence left in
the text is cut with everything after it (text that may be its start is held back until the next piece
decides), and a reply cut by `max_tokens` inside a character does not end in U+FFFD (a replacement character
ending a block is held back until more text shows it was the model's own).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from adapters.mlx_server.stops import StopMatcher
from launcher.bridge.leaks import TextToolParser, ToolCallFound
from launcher.bridge.toolcalls import CallCollector, FinalCall, finalize, new_id
from launcher.bridge.usage import Usage

log = logging.getLogger("anyclaude.bridge")

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not UTF-8, or not yet complete

Event = dict[str, Any]

__all__ = ["StreamTranslator", "UpstreamStreamError", "new_id", "thinking_signature"]


class UpstreamStreamError(Exception):
    """The backend reported an error inside its stream."""


def thinking_signature(thinking: str) -> str:
    """A non-empty, opaque signature for a thinking block, as clients that verify or echo it back expect.

    Local backends sign nothing; a digest of the text is stable, so a block echoed back unchanged keeps it.
    """
    digest = hashlib.sha256(b"anyclaude-thinking\n" + thinking.encode("utf-8", "surrogatepass")).digest()
    return base64.b64encode(digest).decode()


class StreamTranslator:
    """Feeds OpenAI chunks in, returns the Anthropic events each one produces.

    Args:
        model: the model id the client asked for, echoed back (Claude Code checks it).
        input_tokens: the prompt size known before the backend answers (0 when unknown); replaced by
            the backend's count when its prefill report or usage arrives.
        stop_sequences: the request's, to report which one ended the text.
        parser: a streaming text tool-call parser for backends that leak calls as text, or None.
    """

    def __init__(
        self,
        model: str,
        input_tokens: int = 0,
        stop_sequences: list[str] | None = None,
        parser: TextToolParser | None = None,
        one_call: bool = False,
    ) -> None:
        self.model = model
        self._one_call = one_call  # send only the first tool call (see `finish`)
        self.message_id = new_id("msg")
        self.usage = Usage(input_tokens=input_tokens)
        self.generating = False  # True once the first token (text, thinking or a tool call) arrived
        self._stops = stop_sequences or []
        self._stop_matcher = StopMatcher(self._stops) if any(self._stops) else None
        self._cut_by: str | None = None  # the stop sequence found in the text, which ended it
        self._parser = parser
        self._open: str | None = None  # "text" or "thinking"
        self._next = 0
        self._thinking: list[str] = []
        self._calls = CallCollector()
        self._tool_blocks = 0
        self._trailing: list[str] = []
        self._replacements = ""  # U+FFFD ending the open block, not sent yet
        self._finish_reason: str | None = None
        self._matched_stop: str | None = None
        self._chunks = 0

    @property
    def finished(self) -> bool:
        """True once the backend said why it stopped (a `finish_reason` arrived)."""
        return self._finish_reason is not None

    # ----- events

    def start(self) -> list[Event]:
        """The `message_start` event; its usage is the same split the final usage reports."""
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**self.usage.anthropic(), "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def prefill(self, report: dict[str, Any]) -> None:
        """Take a backend's prefill report (`prompt_tokens`, `cached_tokens`), sent before its first chunk."""
        self.usage.update({"prompt_tokens": report.get("prompt_tokens"), "prompt_tokens_details": report})

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
            # vLLM names the matched stop string `stop_reason`, SGLang `matched_stop`; either may be null.
            for key in ("stop_reason", "matched_stop"):
                matched = choice.get(key)
                if isinstance(matched, str) and matched in self._stops:
                    self._matched_stop = matched
        return out

    def finish(self) -> list[Event]:
        """Close every block, send the tool calls, and end the message."""
        out: list[Event] = []
        if self._stop_matcher is not None and self._cut_by is None:
            self._answer(self._stop_matcher.flush(), out)
        if self._parser is not None:
            self._parsed(self._parser.finish(), out)
            self._parser = None
        self._close(out)
        calls = finalize(self._calls.calls)
        if self._one_call and len(calls) > 1:
            # A call written after another, before the first one's result was seen, is a guess: Qwen2.5-Coder-1.5B
            # answered "Read greet.py, then fix it" with Read, an Edit of text it had not read, and a test run.
            log.info("sending the first of %d tool calls (one call a reply: %s)", len(calls), calls[0].name)
            calls = calls[:1]
        for call in calls:
            self._tool_block(call, out)
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
            self.generating = True
            self._thinking_delta(reasoning, out)
        # Text before the calls of the same delta: a model writes its sentence, then calls.
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.generating = True
            if self._stop_matcher is not None:
                content = self._until_stop(content, self._stop_matcher)
            self._answer(content, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list) and calls:
            self.generating = True
            if self._parser is not None:  # the backend does structured calls: stop looking in text
                self._parsed(self._parser.finish(), out)
                self._parser = None
            for call in calls:
                if isinstance(call, dict):
                    self._calls.feed(call)

    def _until_stop(self, content: str, matcher: StopMatcher) -> str:
        """The part of `content` before a stop sequence; nothing once one was found."""
        if self._cut_by is not None:
            return ""
        result = matcher.feed(content)
        if result.stopped:
            self._cut_by = matcher.matched
        return result.text

    def _answer(self, content: str, out: list[Event]) -> None:
        if not content:
            return
        if self._parser is not None:
            self._parsed(self._parser.feed(content), out)
        else:
            self._text(content, out)

    def _parsed(self, items: list[str | ToolCallFound], out: list[Event]) -> None:
        for item in items:
            if isinstance(item, str):
                self._text(item, out)
            else:
                self._calls.add_whole(item.id, item.name, item.arguments)

    def _text(self, text: str, out: list[Event], trailing: bool = False) -> None:
        if not text:
            return
        if self._calls and not trailing:
            # Calls are sent when the response ends; text after them (usually whitespace) follows them.
            self._trailing.append(text)
            return
        if self._open != "text":
            self._close(out)
            self._start({"type": "text", "text": ""}, "text", out)
        self._block_delta(text, out)

    def _thinking_delta(self, text: str, out: list[Event]) -> None:
        # Also after a tool call began: the calls are sent when the answer ends, so the block goes before them.
        if self._open != "thinking":
            self._close(out)
            self._start({"type": "thinking", "thinking": "", "signature": ""}, "thinking", out)
            self._thinking = []
        self._block_delta(text, out)

    def _block_delta(self, text: str, out: list[Event]) -> None:
        """Text or thinking for the open block; replacement characters that end it wait for what follows."""
        text = self._replacements + text
        if text[-1] == REPLACEMENT:
            kept = text.rstrip(REPLACEMENT)
            self._replacements, text = text[len(kept) :], kept
            if not text:
                return
        else:
            self._replacements = ""
        self._send(text, out)

    def _send(self, text: str, out: list[Event]) -> None:
        if self._open == "thinking":
            self._thinking.append(text)
            delta = {"type": "thinking_delta", "thinking": text}
        else:
            delta = {"type": "text_delta", "text": text}
        out.append({"type": "content_block_delta", "index": self._next - 1, "delta": delta})

    def _tool_block(self, call: FinalCall, out: list[Event]) -> None:
        if call.note is not None:
            self._text(call.note, out, trailing=True)
        self._close(out)
        self._tool_blocks += 1
        self._start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, "tool", out)
        if call.arguments != "{}":
            delta = {"type": "input_json_delta", "partial_json": call.arguments}
            out.append({"type": "content_block_delta", "index": self._next - 1, "delta": delta})
        self._close(out)

    def _start(self, block: dict[str, Any], kind: str, out: list[Event]) -> None:
        out.append({"type": "content_block_start", "index": self._next, "content_block": block})
        self._next += 1
        self._open = kind

    def _close(self, out: list[Event]) -> None:
        if self._open is None:
            return
        if self._replacements:
            # The model's own U+FFFD, unless the answer was cut inside a character (then it is a decoder's).
            if self._finish_reason != "length":
                self._send(self._replacements, out)
            self._replacements = ""
        if self._open == "thinking":
            # Clients that verify or echo thinking back need a signature before the block stops.
            signature = thinking_signature("".join(self._thinking))
            delta = {"type": "signature_delta", "signature": signature}
            out.append({"type": "content_block_delta", "index": self._next - 1, "delta": delta})
        out.append({"type": "content_block_stop", "index": self._next - 1})
        self._open = None

    def _stop_reason(self) -> tuple[str, str | None]:
        if self._cut_by is not None and not self._tool_blocks:
            return "stop_sequence", self._cut_by
        if self._finish_reason == "length":
            return "max_tokens", None
        if self._tool_blocks:
            return "tool_use", None
        if self._finish_reason == "content_filter":
            return "refusal", None
        if self._matched_stop is not None:
            return "stop_sequence", self._matched_stop
        return "end_turn", None
