"""Server-sent events: encoding Anthropic events, and reading an OpenAI-style event stream.

Anthropic's SDK needs an `event:` line on every event (it dispatches on it), so `encode` always
writes one; the reader accepts `data:` with or without the space and multi-line data.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from adapters.contracts import PREFILL_COMMENT
from launcher.bridge.codec import DecodeError, dumps, loads

DONE = "[DONE]"


def encode(event: dict[str, Any]) -> bytes:
    """One Anthropic event as SSE bytes; the event name is the payload's `type`."""
    name: str = event["type"]
    return b"event: " + name.encode() + b"\ndata: " + dumps(event) + b"\n\n"


PING = encode({"type": "ping"})


# The only line ends an event stream has (WHATWG HTML 9.2.6). `str.splitlines`, which httpx's
# `aiter_lines` uses, also splits at U+2028, U+0085 and other separators that JSON may carry raw
# inside a string, and a model that writes one would tear the event and fail the response.
_LINE_END = re.compile(rb"\r\n|\r|\n")


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an event stream's body, without their line ends; bytes that are not UTF-8 are replaced.

    Splitting bytes once per read is also cheaper than httpx's incremental text and line decoders.
    """
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        # A CR at the end may be the first half of a CRLF split across two reads: keep it back.
        end = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        *lines, rest = _LINE_END.split(buffer[:end])
        buffer = rest + buffer[end:]
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buffer:
        *lines, rest = _LINE_END.split(buffer)
        for line in lines:
            yield line.decode("utf-8", "replace")
        if rest:
            yield rest.decode("utf-8", "replace")


class TornStream(Exception):
    """The upstream stream ended inside an event or carried something that is not JSON."""


PREFILL = PREFILL_COMMENT


@dataclass(frozen=True)
class Comment:
    """An SSE comment line (`: text`). Proof that the backend is alive; our MLX server also reports its
    prefill in them: `: prefill {"prompt_tokens": 3000, "cached_tokens": 1024, "processed": 1536}`."""

    text: str

    def prefill(self) -> dict[str, Any] | None:
        """The prefill report this comment carries, or None."""
        if not self.text.startswith(PREFILL):
            return None
        try:
            value = loads(self.text[len(PREFILL) :])
        except DecodeError:
            return None
        return value if isinstance(value, dict) else None


class OpenAIEvents:
    """Iterates the JSON payloads of an OpenAI chat-completions stream, and its comment lines.

    `done` becomes True when the `[DONE]` marker arrived, so the caller can tell a finished stream
    from one cut off between events.
    """

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.done = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any] | Comment]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any] | Comment]:
        data: list[str] = []
        async for raw in self._lines:
            line = raw.rstrip("\r\n")
            if line.startswith(":"):
                if not self.done:
                    yield Comment(line[1:].strip())
                continue
            if not line:
                if data:
                    payload = "\n".join(data)
                    data = []
                    if payload.strip() == DONE:
                        # Read on to the end of the body: a response closed unread also closes its
                        # keep-alive connection, and the next request pays a new connect.
                        self.done = True
                    elif not self.done:
                        yield self._decode(payload)
                continue
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            # `event:`, `id:` and `retry:` lines carry nothing the bridge needs.
        if data:
            # A last event without its blank line is complete only if it parses.
            payload = "\n".join(data)
            if payload.strip() == DONE:
                self.done = True
                return
            yield self._decode(payload)

    @staticmethod
    def _decode(payload: str) -> dict[str, Any]:
        try:
            value = loads(payload)
        except DecodeError:
            raise TornStream(f"the backend sent an event that is not JSON ({len(payload)} bytes)") from None
        if not isinstance(value, dict):
            raise TornStream("the backend sent an event that is not a JSON object")
        return value
