"""One proxied request as the request log keeps it.

The proxy fills a `RequestRecord` at a few points (start, routing, first token, end) with plain
attribute writes; everything that costs more (parsing the answer's usage and stop reason) happens
later on the writer thread, in `RequestRecord.settle`. The record sees the answer the client got,
not the backend's, so the same code serves translated streams and relayed ones.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from adapters.contracts import SESSION_HEADERS

# The answer's first chunks carry `message_start` (input tokens of a relayed stream); its last ones
# carry `message_delta` (stop reason, final usage) or an `error` event. Nothing else is kept.
HEAD_CHUNKS = 2
TAIL_CHUNKS = 4
# A rate from fewer tokens measures the last chunk's flush, not decoding (2 tokens read as 20,000 tokens/s).
MIN_DECODE_TOKENS = 8
# With logBodies on, this much of each request and answer is stored.
BODY_KEEP_BYTES = 1024 * 1024

_SESSION, _AGENT, _PARENT = (name.encode() for name in SESSION_HEADERS)
_DELTA = b"content_block_delta"


@dataclass(eq=False, slots=True)
class RequestRecord:
    """What the log keeps of one request; the `*_at` fields are `time.perf_counter()` readings."""

    started: float  # wall-clock seconds since the epoch
    started_at: float
    endpoint: str
    session_id: str | None = None
    agent_id: str | None = None
    parent_agent_id: str | None = None
    backend: str | None = None
    model_asked: str | None = None
    model_served: str | None = None
    streamed: bool = False
    request_bytes: int = 0
    status: int = 0
    error_type: str | None = None
    first_token_at: float | None = None
    text_tool_calls: int | None = None  # calls recovered from the answer's text (None: text not searched)
    tool_parse_failed: bool = False  # text looked like a tool call that could not be made one
    ended_at: float | None = None
    # Filled on the writer thread by `settle`.
    stop_reason: str | None = None
    input_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    # Raw material for `settle`, dropped once read.
    head: list[bytes] = field(default_factory=list)
    tail: deque[bytes] = field(default_factory=lambda: deque(maxlen=TAIL_CHUNKS))
    whole: bytes | None = None
    json_answer: bool = False
    encoded: str | None = None  # the answer's content-encoding (a relay passes the real API's gzip on)
    keep_bodies: bool = False
    request_body: bytes | None = None
    answer: list[bytes] | None = None
    answer_bytes: int = 0

    @classmethod
    def begin(cls, endpoint: str, headers: list[tuple[bytes, bytes]]) -> RequestRecord:
        """A record for a request that starts now, with Claude Code's session and agent ids."""
        record = cls(time.time(), time.perf_counter(), endpoint)
        for name, value in headers:
            # One pass over the raw headers; most requests carry none of these.
            if name.startswith(b"x-claude-code-"):
                if name == _SESSION:
                    record.session_id = value.decode("latin-1")[:200]
                elif name == _AGENT:
                    record.agent_id = value.decode("latin-1")[:200]
                elif name == _PARENT:
                    record.parent_agent_id = value.decode("latin-1")[:200]
        return record

    def chunk(self, data: bytes) -> None:
        """One chunk of the answer as it is sent to the client (called on the hot path: keep it cheap)."""
        if self.first_token_at is None and _DELTA in data:
            self.first_token_at = time.perf_counter()
        if self.json_answer or len(self.head) < HEAD_CHUNKS:  # a whole answer is read whole (relayed in pieces)
            self.head.append(data)
        else:
            self.tail.append(data)
        if self.answer is not None and self.answer_bytes < BODY_KEEP_BYTES:
            self.answer.append(data)
            self.answer_bytes += len(data)

    # ------------------------------------------------------------------ derived figures

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else max(0.0, self.first_token_at - self.started_at)

    @property
    def decode_tps(self) -> float | None:
        """Output tokens per second after the first one (None when it cannot be told)."""
        if self.first_token_at is None or self.ended_at is None or not self.output_tokens:
            return None
        span = self.ended_at - self.first_token_at
        return (self.output_tokens - 1) / span if self.output_tokens >= MIN_DECODE_TOKENS and span > 0.001 else None

    # ------------------------------------------------------------------ reading the answer (writer thread)

    def settle(self) -> None:
        """Read usage, stop reason and error type from what the client was sent; drop the raw chunks."""
        if self.encoded is not None and self.encoded != "gzip":
            pass  # an encoding the log does not read: no figures, and no verdict on how it ended
        elif self.json_answer:
            raw = self.whole if self.whole is not None else b"".join([*self.head, *self.tail])
            self._read_message(_json(_gunzip(raw) if self.encoded else raw))
        elif self.encoded:
            pass  # a gzip stream is kept only in part (head and tail): it cannot be unpacked
        else:
            for event in _events(b"".join(self.head)) + _events(b"".join(self.tail)):
                self._read_event(event)
            if self.status < 400 and self.stop_reason is None and self.error_type is None and self.streamed:
                self.error_type = "incomplete"  # the stream ended without message_stop: the client left early
        self.head, self.whole = [], None
        self.tail.clear()

    def _read_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if message.get("type") == "error":
            self._read_error(message)
            return
        if isinstance(message.get("stop_reason"), str):
            self.stop_reason = message["stop_reason"]
        self._read_usage(message.get("usage"))
        if self.model_served is None and isinstance(message.get("model"), str):
            self.model_served = message["model"]

    def _read_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self._read_message(event.get("message"))
            self.stop_reason = None
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
            self._read_usage(event.get("usage"))
        elif kind == "error":
            self._read_error(event)

    def _read_error(self, body: dict[str, Any]) -> None:
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            self.error_type = error["type"][:64]
        else:
            self.error_type = "error"

    def _read_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, attr in (
            ("input_tokens", "input_tokens"),
            ("cache_read_input_tokens", "cached_tokens"),
            ("output_tokens", "output_tokens"),
        ):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, attr, value)


def _gunzip(raw: bytes) -> bytes:
    import gzip
    import zlib

    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return b""


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of the whole `data:` lines in `raw` (a torn first or last line is skipped)."""
    found = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = _json(line[5:].strip())
            if isinstance(value, dict):
                found.append(value)
    return found
