"""Non-streaming answers, assembled from the same events the stream produces.

The backend is always asked to stream; a non-stream client gets the folded result, so both paths
share one translation and cannot drift apart.
"""

from __future__ import annotations

import logging
from typing import Any

from launcher.bridge.codec import DecodeError, loads

log = logging.getLogger("anyclaude.bridge")


class MessageAssembler:
    """Folds Anthropic stream events into the final `message` object."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._json: dict[int, list[str]] = {}

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message_start":
            self.message = dict(event["message"])
            self.message["content"] = []
            self.message["usage"] = dict(event["message"]["usage"])
        elif kind == "content_block_start":
            self.message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            block = self.message["content"][event["index"]]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                self._json.setdefault(event["index"], []).append(delta["partial_json"])
        elif kind == "content_block_stop":
            self._finish_block(event["index"])
        elif kind == "message_delta":
            self.message["stop_reason"] = event["delta"]["stop_reason"]
            self.message["stop_sequence"] = event["delta"]["stop_sequence"]
            self.message["usage"].update(event["usage"])

    def _finish_block(self, index: int) -> None:
        block = self.message["content"][index]
        if block["type"] != "tool_use":
            return
        text = "".join(self._json.pop(index, []))
        if not text.strip():
            return
        try:
            value = loads(text)
        except DecodeError:
            value = None
        if isinstance(value, dict):
            block["input"] = value
        else:  # the translator sends only JSON objects; kept so a fold can never raise
            log.warning("tool call %s had arguments that are not a JSON object; sending {}", block["name"])


def completion_as_chunk(body: dict[str, Any]) -> dict[str, Any]:
    """A whole `chat.completion` (a backend that ignored `stream: true`) as one equivalent chunk."""
    choices = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = dict(choice.get("message") or {})
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [
                {**call, "index": i} if isinstance(call, dict) else call for i, call in enumerate(calls)
            ]
        choices.append({"index": 0, "delta": message, "finish_reason": choice.get("finish_reason")})
    return {"choices": choices, "usage": body.get("usage")}
