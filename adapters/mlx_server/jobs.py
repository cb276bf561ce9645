"""One generation request as both threads see it: what to generate, and the events that come back.

The event loop builds a `GenerationRequest`, the engine wraps it in a `Job` and hands it to the generation
thread; that thread `emit`s events (`Prefill` while the prompt is read, `TextChunk`s, then `Finished` or
`Failed`) and the event loop iterates them with `events()`. Nothing else crosses between the threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from adapters.mlx_server.cache_slots import ANONYMOUS, Owner
from adapters.mlx_server.pool import LoadedModel
from adapters.mlx_server.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    model: LoadedModel
    prompt_tokens: list[int]
    sampling: SamplingParams
    stops: tuple[str, ...]
    max_tokens: int
    request_id: str
    # Chat-template settings that shaped `prompt_tokens`; prompt-cache slots are never shared across them.
    cache_namespace: str = ""
    # Claude Code's session and agent ids: which conversation the prompt-cache slots belong to.
    owner: Owner = ANONYMOUS


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Prefill:
    """The prompt is being read: `processed` of `prompt_tokens` have their keys (the `cached_tokens` included).

    Sent once when the request is admitted (then `processed == cached_tokens`) and after each prefill chunk.
    """

    prompt_tokens: int
    cached_tokens: int
    processed: int


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop", "length" or "cancelled"
    usage: Usage
    # The stop sequence that ended the reply (its text is not part of the reply), if one did.
    stop_sequence: str | None = None


@dataclass(frozen=True)
class Failed:
    message: str


Event = Prefill | TextChunk | Finished | Failed


class Job:
    """One queued generation, seen from both sides: the worker emits, the event loop iterates."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop, discard: Callable[[Job], None]):
        self.request = request
        self.submitted = time.perf_counter()
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._discard = discard
        self._text_emitted = False
        self._text_taken = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop at the next step (or never start); frees the queue place at once. Any thread."""
        self._cancelled.set()
        self._discard(self)

    def emit(self, event: Event) -> None:
        """Hand an event to the event loop. Worker thread only."""
        self._text_emitted = self._text_emitted or isinstance(event, TextChunk)
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:
            # The loop is closed (host app shut down): nobody will read, so stop generating.
            self._cancelled.set()

    @property
    def text_emitted(self) -> bool:
        return self._text_emitted

    def wait_first_text_taken(self, timeout: float) -> bool:
        """Block until the event loop has dealt with the first `TextChunk`, if one was emitted; True if it has.

        Worker thread. Returns False at once when no text was emitted, and after `timeout` when nobody took it.
        """
        return self._text_emitted and self._text_taken.wait(timeout)

    async def events(self) -> AsyncIterator[Event]:
        """Events until `Finished` or `Failed` (inclusive)."""
        while True:
            event = await self._events.get()
            yield event
            # Back here once the consumer asks for more: a stream has sent what this event made.
            if isinstance(event, Finished | Failed):
                return
            if isinstance(event, TextChunk):
                self._text_taken.set()
