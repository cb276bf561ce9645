"""OpenAI response bodies and stream chunks, built from the server's own event types."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from adapters import contracts
from adapters.mlx_server.jobs import Finished, Prefill, Usage
from adapters.mlx_server.output import CollectedOutput, OutputEvent, ReasoningPiece
from adapters.tool_parsers import ToolCall, ToolCallDelta


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event line; `[DONE]` is passed as the plain string."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n"


def prefill_comment(event: Prefill) -> str:
    """The SSE comment line reporting prompt reading (ignored by clients; read by anyclaude's proxy)."""
    figures = {"prompt_tokens": event.prompt_tokens, "cached_tokens": event.cached_tokens, "processed": event.processed}
    return contracts.prefill_comment(figures)


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def tool_call_body(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if index is not None:
        body["index"] = index
    return body


def chat_finish_reason(engine_reason: str, has_tool_calls: bool) -> str:
    return "tool_calls" if has_tool_calls else ("length" if engine_reason == "length" else "stop")


@dataclass
class ChatStream:
    """Builds the chunks of one streamed chat completion; counts tool calls for their `index`."""

    model: str
    id: str = field(default_factory=lambda: "chatcmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    tool_calls: int = 0

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, stop_reason: str | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        if stop_reason is not None:
            choice["stop_reason"] = stop_reason
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def event_chunk(self, event: OutputEvent) -> dict[str, Any]:
        if isinstance(event, ReasoningPiece):
            return self.chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            self.tool_calls += 1
            return self.chunk({"tool_calls": [tool_call_body(event.call, self.tool_calls - 1)]})
        return self.chunk({"content": event.text})

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_body(usage),
        }


def chat_completion(model: str, output: CollectedOutput, done: Finished) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": output.content or None}
    if output.reasoning:
        message["reasoning_content"] = output.reasoning
    if output.tool_calls:
        message["tool_calls"] = [tool_call_body(call) for call in output.tool_calls]
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": chat_finish_reason(done.finish_reason, bool(output.tool_calls)),
                "stop_reason": done.stop_sequence,
                "logprobs": None,
            }
        ],
        "usage": usage_body(done.usage),
    }


@dataclass
class CompletionStream:
    model: str
    id: str = field(default_factory=lambda: "cmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(
        self,
        text: str,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        stop_reason: str | None = None,
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        if stop_reason is not None:
            choice["stop_reason"] = stop_reason
        body: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if usage is not None:
            body["choices"] = []
            body["usage"] = usage_body(usage)
        return body


def completion(model: str, text: str, done: Finished) -> dict[str, Any]:
    reason = "length" if done.finish_reason == "length" else "stop"
    body = CompletionStream(model).chunk(text, reason, stop_reason=done.stop_sequence)
    body["usage"] = usage_body(done.usage)
    return body
