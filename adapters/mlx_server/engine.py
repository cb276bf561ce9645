"""The generation thread that owns MLX, and the bounded queue in front of it.

Why one thread: MLX streams are bound to the thread that created them (using one from another thread fails
with "There is no Stream(cpu, 0) in current thread"), so every model call happens here. Requests still run
together: each loaded model that can batch has a `batch.BatchRunner` (mlx-lm's continuous batching), and the
thread admits waiting requests into it between steps, up to `decode_concurrency` running and
`prefill_concurrency` reading their prompts. Requests that cannot batch (`solo.py`: a model whose cache
cannot merge, a request with a `seed`) wait until no batch runs, then run alone.

Up to `max_queue` requests wait beyond what can run; past that a request is refused at once (503) rather
than left to time out. Event-loop code talks to the thread only through `submit`, `call` and `Job.cancel`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters.mlx_server.batch import BatchRunner
from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.jobs import Failed, GenerationRequest, Job
from adapters.mlx_server.prompt_cache import PromptCacheStore
from adapters.mlx_server.solo import FIRST_TEXT_HANDOFF_S, run_solo

log = logging.getLogger("anyclaude.mlx_server")
T = TypeVar("T")

# Seconds without work after a request before the prompt cache is saved. Saving while requests follow each
# other (a turn, then its side requests) would compete with them for the CPU; a pause means the client is
# waiting on its user or a tool, so the save costs nobody anything.
IDLE_SAVE_S = 0.5

# Longest the generation thread, idle, waits for requests still being read and rendered before it starts the
# first that arrived: requests sent together (parallel subagents' turns, a client's burst) then start as one
# batch and finish together, instead of one ahead and the rest a prefill behind it, which left the batch short
# at every turn's end (measured: 4 sessions in lockstep, 31.8 s staggered vs 29.3 s together). A lone request
# waits for nobody: the count is of requests actually in flight towards `submit`.
GATHER_S = 0.05

# Longest the event loop waits for the GIL once a token is handed to it. Right after handing one over, the
# generation thread builds the next step's graph in Python (GIL held, a few ms); the loop, woken to send the
# token, waited out CPython's default 5 ms switch interval behind it (measured: +4-5 ms on every time to
# first token). The generation thread spends the rest of its time inside MLX calls, which release the GIL.
GIL_SWITCH_INTERVAL_S = 0.001


class Ticket:
    """A request on its way to `submit` (its body read, its prompt being rendered): see `GATHER_S`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._open = True

    def close(self) -> None:
        """The request is submitted, or will not be; idempotent."""
        if self._open:
            self._open = False
            self._engine._arrived()


class QueueFullError(Exception):
    """Every place in the queue is taken; the client should retry later."""


class EngineStoppedError(Exception):
    """The engine is shutting down and takes no more work."""


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any]


def runs_alone(job: Job) -> bool:
    """True for a request that cannot join a batch: its model cannot batch, or it has a seed."""
    return job.request.model.batching is not None or job.request.sampling.seed is not None


class Engine:
    """The generation worker. `start()` once, `submit()` from the event loop, `stop()` at shutdown."""

    def __init__(self, config: ServerConfig, cache_store: PromptCacheStore) -> None:
        self._config = config
        self._cache_store = cache_store
        self._waiting: deque[Job] = deque()
        self._calls: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # One per loaded model object (a model reloaded after an eviction gets a new one while the old one's
        # requests finish); generation thread only.
        self._runners: dict[int, BatchRunner] = {}
        self._running = 0  # jobs admitted and not finished (a snapshot for `submit`, under the lock)
        self._coming = 0  # open tickets: requests being rendered that will be submitted
        self._prefilling = 0
        self._stopping = False
        self._served = 0
        self._cancelled = 0
        self._largest_start = 0  # most requests started in one round (a burst starting as one batch)
        self._stream: Any = None

    # ---- event-loop side ----

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="mlx-generation", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new work, fail what is queued, cancel what runs, and wait for the thread."""
        with self._cond:
            self._stopping = True
            jobs, calls = list(self._waiting), list(self._calls)
            self._waiting.clear()
            self._calls.clear()
            self._cond.notify_all()
        for job in jobs:
            job.emit(Failed("the server is shutting down"))
        for call in calls:
            if not call.future.done():
                call.future.set_exception(EngineStoppedError("the server is shutting down"))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the generation thread between steps (model loading); not counted against `max_queue`."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(EngineStoppedError("the server is shutting down"))
                return future
            self._calls.append(_Call(fn, future))
            self._cond.notify()
        return future

    def expect(self) -> Ticket:
        """Say a request is coming (call before rendering its prompt); pass the ticket to `submit`."""
        with self._cond:
            self._coming += 1
        return Ticket(self)

    def _arrived(self) -> None:
        with self._cond:
            self._coming -= 1
            self._cond.notify_all()

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop, ticket: Ticket | None = None) -> Job:
        """Queue a generation (closing its ticket). Raises QueueFullError or EngineStoppedError."""
        job = Job(request, loop, self._discard)
        if ticket is not None:
            ticket.close()  # before the job is queued: the thread then never waits for this very request
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("the server is shutting down")
            free = max(0, self._config.decode_concurrency - self._running)
            if len(self._waiting) >= self._config.max_queue + free and (self._running or self._waiting):
                raise QueueFullError(
                    f"{self._running} requests are running and {len(self._waiting)} waiting "
                    f"(decodeConcurrency {self._config.decode_concurrency}, maxQueue {self._config.max_queue})"
                )
            self._waiting.append(job)
            self._cond.notify()
        return job

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "waiting": len(self._waiting),
                "running": self._running,
                "prefilling": self._prefilling,
                "decoding": self._running - self._prefilling,
                "max": self._config.max_queue,
                "decode_concurrency": self._config.decode_concurrency,
                "prefill_concurrency": self._config.prefill_concurrency,
                "served": self._served,
                "cancelled": self._cancelled,
                "largest_start": self._largest_start,
                "speculative": self._speculation(),
            }

    def _speculation(self) -> dict[str, Any]:
        """Speculative decoding so far (see speculative.py): drafted and kept tokens, passes and their tokens."""
        totals = {"drafted": 0, "accepted": 0, "steps": 0, "tokens": 0}
        for runner in list(self._runners.values()):  # read without the generation thread's lock: figures only
            figures = runner.speculation
            totals["drafted"] += figures.drafted
            totals["accepted"] += figures.accepted
            totals["steps"] += figures.steps
            totals["tokens"] += figures.produced
        return totals

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
                busy = any(runner.running for runner in self._runners.values())
                if not busy:
                    # Idle: after a request, wait at most IDLE_SAVE_S for the next one; if none comes, save.
                    self._cond.wait_for(
                        lambda: bool(self._waiting or self._calls) or self._stopping,
                        timeout=IDLE_SAVE_S if unsaved else None,
                    )
                    if self._waiting and self._coming:  # others are on their way: start together (GATHER_S)
                        self._cond.wait_for(lambda: not self._coming or self._stopping, timeout=GATHER_S)
                if self._stopping:
                    break
                calls = list(self._calls)
                self._calls.clear()
                admitted, alone = self._admissible()
                self._largest_start = max(self._largest_start, len(admitted))
            if not (busy or calls or admitted or alone):
                unsaved = False
                self._flush_cache(final=False)
                continue
            with mx.stream(self._stream):
                for call in calls:
                    _run_call(call)
                for job in admitted:
                    self._admit(job, together=len(admitted) > 1)
                if alone is not None:
                    self._serve_alone(alone)
                self._step_batches()
            unsaved = unsaved or bool(admitted) or alone is not None
            if mx.get_cache_memory() > self._config.cache_limit_bytes:
                # Freed buffers stay cached by MLX for reuse; past the limit they go back to the system.
                mx.clear_cache()
        self._shutdown()

    def _admissible(self) -> tuple[list[Job], Job | None]:
        """Waiting jobs that can start now, in order, and a job to run alone (called with the lock held).

        A job that must run alone waits at the head of the queue until no batch runs, and nothing behind it
        starts meanwhile; a batch job may pass one that waits for a shared prefix another request computes.
        """
        admitted: list[Job] = []
        for job in list(self._waiting):
            if job.cancelled:
                continue
            if runs_alone(job):
                if admitted or any(runner.running for runner in self._runners.values()):
                    break
                self._waiting.remove(job)
                self._running += 1
                return admitted, job
            runner = self._runner(job)
            planned = [other for other in admitted if other.request.model is job.request.model]
            if runner.running + len(planned) >= self._config.decode_concurrency:
                continue
            if runner.prefilling + len(planned) >= self._config.prefill_concurrency:
                continue
            if runner.waits_for_shared_prefix(job, planned):
                continue
            self._waiting.remove(job)
            admitted.append(job)
        self._running += len(admitted)
        return admitted, None

    def _runner(self, job: Job) -> BatchRunner:
        loaded = job.request.model
        runner = self._runners.get(id(loaded.model))
        if runner is None:
            runner = self._runners[id(loaded.model)] = BatchRunner(
                loaded, self._cache_store, self._config, self._stream
            )
            # An idle runner of an earlier copy of this model holds its weights: let them go.
            for key, other in list(self._runners.items()):
                if other is not runner and other.alias == loaded.alias and not other.running:
                    del self._runners[key]
        return runner

    def _admit(self, job: Job, together: bool = False) -> None:
        try:
            result = self._runner(job).admit(job, together)
        except Exception as exc:  # a request the batch cannot take fails alone; the others go on
            log.exception("request %s could not join the batch", job.request.request_id)
            job.emit(Failed(f"generation failed: {exc}"))
            self._finished([job])
            return
        self._finished(result.finished)
        for first in result.first_texts:  # see solo.FIRST_TEXT_HANDOFF_S
            first.wait_first_text_taken(FIRST_TEXT_HANDOFF_S)

    def _serve_alone(self, job: Job) -> None:
        try:
            if not job.cancelled:
                run_solo(job, self._cache_store, self._config)
        except Exception as exc:
            log.exception("generation %s failed", job.request.request_id)
            job.emit(Failed(f"generation failed: {exc}"))
        self._finished([job])

    def _step_batches(self) -> None:
        for key, runner in list(self._runners.items()):
            if not runner.running:
                continue
            try:
                result = runner.step()
            except Exception as exc:
                log.exception(
                    "the batch of %s failed; its requests fail, the next ones start a new batch", runner.alias
                )
                self._finished(runner.fail_all(f"generation failed: {exc}"))
                del self._runners[key]
                continue
            self._finished(result.finished)
            # The first text goes out before the next step is queued (see solo.FIRST_TEXT_HANDOFF_S).
            for job in result.first_texts:
                job.wait_first_text_taken(FIRST_TEXT_HANDOFF_S)
        with self._cond:
            self._prefilling = sum(runner.prefilling for runner in self._runners.values())

    def _finished(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        with self._cond:
            self._running -= len(jobs)
            self._served += len(jobs)
            self._cancelled += sum(job.cancelled for job in jobs)

    def _shutdown(self) -> None:
        """Last acts of this thread: the prompt caches' arrays belong to its stream, so it saves them itself."""
        import mlx.core as mx

        with mx.stream(self._stream):
            for runner in self._runners.values():
                try:
                    runner.cancel_all()  # what running requests computed is kept, then saved below
                except Exception:
                    log.exception("ending the running requests failed")
        self._runners.clear()
        self._flush_cache(final=True)

    def _flush_cache(self, *, final: bool) -> None:
        import mlx.core as mx

        try:
            with mx.stream(self._stream):
                self._cache_store.flush(final=final)
        except Exception:  # a full disk must not stop the generation thread
            log.exception("saving the prompt cache failed")


def _run_call(call: _Call) -> None:
    if not call.future.set_running_or_notify_cancel():
        return
    try:
        call.future.set_result(call.fn())
    except BaseException as exc:  # handed to the caller; the worker must survive it
        call.future.set_exception(exc)
