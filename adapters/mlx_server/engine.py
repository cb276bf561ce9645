"""One generation thread that owns MLX, and the bounded FIFO queue in front of it.

Why one thread: MLX streams are bound to the thread that created them (using one from another
thread fails with "There is no Stream(cpu, 0) in current thread"), and two generations at once
would only share the same compute while doubling memory. Requests wait in a FIFO of `max_queue`
places; a full queue is refused at once (503) rather than left to time out. Event-loop code talks
to the thread only through `submit`, `call` and `Job.cancel`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.generation import FedTokens, generate_tokens
from adapters.mlx_server.pool import LoadedModel
from adapters.mlx_server.prompt_cache import PromptCacheStore, cache_key
from adapters.mlx_server.sampling import SamplingParams, build_sampling
from adapters.mlx_server.stops import StopMatcher

log = logging.getLogger("anyclaude.mlx_server")
T = TypeVar("T")

# Seconds without work after a request before the prompt cache is saved. Saving while requests follow each
# other (a turn, then its side requests) would compete with them for the CPU; a pause means the client is
# waiting on its user or a tool, so the save costs nobody anything.
IDLE_SAVE_S = 0.5

# Longest the event loop waits for the GIL once a token is handed to it. Right after handing one over, the
# generation thread builds the next step's graph in Python (GIL held, a few ms); the loop, woken to send the
# token, waited out CPython's default 5 ms switch interval behind it (measured: +4-5 ms on every time to
# first token). The generation thread spends the rest of its time inside MLX calls, which release the GIL.
GIL_SWITCH_INTERVAL_S = 0.001

# Longest the generation thread waits, after handing over the first text of a reply, for the event loop to
# take it before queuing the next step. Queued at once, that step's graph building (GIL) and its compute (every
# core) held back the loop that sends the first token (measured: 1.2 ms median, 4-5 ms one time in ten, on
# a 2-core CPU). Taking it takes well under a millisecond; the cap only matters when the loop is busy.
FIRST_TEXT_HANDOFF_S = 0.02


class QueueFullError(Exception):
    """Every place in the queue is taken; the client should retry later."""


class EngineStoppedError(Exception):
    """The engine is shutting down and takes no more work."""


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


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop", "length" or "cancelled"
    usage: Usage


@dataclass(frozen=True)
class Failed:
    message: str


Event = TextChunk | Finished | Failed


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
        """Stop at the next token (or never start); frees the queue place at once. Any thread."""
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
            if not isinstance(event, TextChunk):
                return
            self._text_taken.set()


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any]


class Engine:
    """The generation worker. `start()` once, `submit()` from the event loop, `stop()` at shutdown."""

    def __init__(self, config: ServerConfig, cache_store: PromptCacheStore) -> None:
        self._config = config
        self._cache_store = cache_store
        self._waiting: deque[Job | _Call] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running: Job | None = None
        self._stopping = False
        self._served = 0
        self._cancelled = 0
        self._stream: Any = None

    # ---- event-loop side ----

    def start(self) -> None:
        if self._thread is not None:
            return
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="mlx-generation", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new work, cancel what is queued or running, and wait for the thread."""
        with self._cond:
            self._stopping = True
            pending = list(self._waiting)
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel()
            self._cond.notify_all()
        for item in pending:
            if isinstance(item, Job):
                item.emit(Failed("the server is shutting down"))
            elif not item.future.done():
                item.future.set_exception(EngineStoppedError("the server is shutting down"))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the generation thread (model loading); not counted against `max_queue`."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(EngineStoppedError("the server is shutting down"))
                return future
            self._waiting.append(_Call(fn, future))
            self._cond.notify()
        return future

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> Job:
        """Queue a generation. Raises QueueFullError or EngineStoppedError."""
        job = Job(request, loop, self._discard)
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("the server is shutting down")
            waiting = sum(1 for item in self._waiting if isinstance(item, Job))
            if waiting >= self._config.max_queue and (self._running is not None or waiting > 0):
                raise QueueFullError(f"{waiting} requests are waiting (maxQueue {self._config.max_queue})")
            self._waiting.append(job)
            self._cond.notify()
        return job

    def stats(self) -> dict[str, int | bool]:
        with self._cond:
            return {
                "waiting": sum(1 for item in self._waiting if isinstance(item, Job)),
                "running": self._running is not None,
                "max": self._config.max_queue,
                "served": self._served,
                "cancelled": self._cancelled,
            }

    def _discard(self, job: Job) -> None:
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                self._cancelled += 1

    # ---- generation thread ----

    def _run(self) -> None:
        import mlx.core as mx

        if self._config.cpu_only:
            mx.set_default_device(mx.cpu)
        if mx.metal.is_available():
            # Keeps the weights wired so macOS does not page them out between requests.
            mx.set_wired_limit(int(mx.device_info()["max_recommended_working_set_size"]))
        # Created here: a stream belongs to the thread that made it.
        self._stream = mx.new_stream(mx.default_device())
        unsaved = False
        while True:
            with self._cond:
                # After a request, wait at most IDLE_SAVE_S for the next one; if none comes, save the caches.
                has_work = self._cond.wait_for(
                    lambda: bool(self._waiting) or self._stopping, timeout=IDLE_SAVE_S if unsaved else None
                )
                if self._stopping:
                    break
                item = self._waiting.popleft() if has_work else None
                if isinstance(item, Job):
                    self._running = item
            if item is None:
                unsaved = False
                self._flush_cache(final=False)
                continue
            unsaved = unsaved or isinstance(item, Job)
            try:
                with mx.stream(self._stream):
                    if isinstance(item, _Call):
                        self._run_call(item)
                    else:
                        self._serve(item)
            finally:
                with self._cond:
                    self._running = None
            if mx.get_cache_memory() > self._config.cache_limit_bytes:
                # Freed buffers stay cached by MLX for reuse; past the limit they go back to the system.
                mx.clear_cache()
        # Last act of this thread: the prompt caches' arrays belong to its stream, so it saves them itself.
        self._flush_cache(final=True)

    def _flush_cache(self, *, final: bool) -> None:
        import mlx.core as mx

        try:
            with mx.stream(self._stream):
                self._cache_store.flush(final=final)
        except Exception:  # a full disk must not stop the generation thread
            log.exception("saving the prompt cache failed")

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.fn())
        except BaseException as exc:  # handed to the caller; the worker must survive it
            call.future.set_exception(exc)

    def _serve(self, job: Job) -> None:
        if job.cancelled:
            return
        try:
            usage, finish, timing = self._generate(job)
        except Exception as exc:
            log.exception("generation %s failed", job.request.request_id)
            job.emit(Failed(f"generation failed: {exc}"))
            return
        with self._cond:
            self._served += 1
            self._cancelled += finish == "cancelled"
        job.emit(Finished(finish, usage))
        ttft, decode_seconds, queue_wait = timing
        rate = (usage.completion_tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0
        log.info(
            "request %s model=%s prompt_tokens=%d cached_tokens=%d prefilled_tokens=%d generated_tokens=%d "
            "ttft=%.3fs tokens_per_s=%.1f queue_wait=%.3fs finish=%s",
            job.request.request_id,
            job.request.model.alias,
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.prompt_tokens - usage.cached_tokens,
            usage.completion_tokens,
            ttft,
            rate,
            queue_wait,
            finish,
        )

    def _generate(self, job: Job) -> tuple[Usage, str, tuple[float, float, float]]:
        import mlx.core as mx

        request = job.request
        started = time.perf_counter()
        if request.sampling.seed is not None:
            mx.random.seed(request.sampling.seed)
        sampler, processors = build_sampling(request.sampling)
        model_key = cache_key(request.model.alias, request.cache_namespace)
        cache, reused = self._cache_store.fetch(model_key, request.model.model, request.prompt_tokens)
        tokenizer = request.model.tokenizer
        detokenizer = tokenizer.detokenizer
        eos = tokenizer.eos_token_ids
        stops = StopMatcher(request.stops)
        generated: list[int] = []
        sampled: list[int] = []  # every token the loop yielded, kept or not (a cancelled one may be fed)
        fed = FedTokens()
        first_token_at: float | None = None
        finish = "length"
        tokens = generate_tokens(
            request.model.model,
            request.prompt_tokens,
            cache,
            reused=reused,
            sampler=sampler,
            processors=processors,
            max_tokens=request.max_tokens,
            prefill_step=self._config.prefill_step,
            cancelled=lambda: job.cancelled,
            fed=fed,
            logits_of=request.model.last_logits,
        )
        try:
            for token in tokens:
                first_token_at = first_token_at or time.perf_counter()
                sampled.append(token)
                if job.cancelled:
                    break
                generated.append(token)
                if token in eos:
                    finish = "stop"
                    break
                detokenizer.add_token(token)
                if _send(job, stops, detokenizer.last_segment):
                    finish = "stop"
                    break
                if len(sampled) == 1:
                    # The first text goes out before the next step is queued (see FIRST_TEXT_HANDOFF_S).
                    job.wait_first_text_taken(FIRST_TEXT_HANDOFF_S)
        finally:
            # Closing drops the step queued ahead; the cache may already hold its token (see offset below).
            tokens.close()
        if job.cancelled:
            finish = "cancelled"
        elif not stops.stopped:
            detokenizer.finalize()
            if _send(job, stops, detokenizer.last_segment):
                finish = "stop"
            elif tail := stops.flush():
                job.emit(TextChunk(tail))
        # The cache holds exactly the tokens fed: never claim one it lacks (a later request would reuse
        # keys that are not there) nor miss one it has (its keys would sit under the wrong token).
        held = (request.prompt_tokens + sampled)[: fed.count]
        if len(held) == fed.count:
            self._cache_store.store(model_key, held, cache)
        ended = time.perf_counter()
        first = first_token_at or ended
        usage = Usage(len(request.prompt_tokens), len(generated), reused)
        return usage, finish, (first - started, ended - first, started - job.submitted)


def _send(job: Job, stops: StopMatcher, segment: str) -> bool:
    """Pass a decoded segment through the stop matcher to the client; True when a stop sequence matched."""
    if not segment:
        return False
    result = stops.feed(segment)
    if result.text:
        job.emit(TextChunk(result.text))
    return result.stopped
