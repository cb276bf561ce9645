"""The hand-off between the generation thread and the event loop, with a real loop and a real worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

from adapters.mlx_server.jobs import Finished, Job, TextChunk, Usage


def _job(loop: asyncio.AbstractEventLoop) -> Job:
    return Job(request=None, loop=loop, discard=lambda _: None)  # type: ignore[arg-type]


def test_worker_learns_when_the_loop_has_taken_the_first_text() -> None:
    async def main() -> tuple[bool, bool, list[object]]:
        job = _job(asyncio.get_running_loop())
        results: dict[str, bool] = {}

        def worker() -> None:
            results["before_text"] = job.wait_first_text_taken(0.0)  # nothing emitted: no wait at all
            job.emit(TextChunk("Hel"))
            results["taken"] = job.wait_first_text_taken(5.0)
            job.emit(Finished("stop", Usage(3, 1, 0)))

        thread = threading.Thread(target=worker)
        thread.start()
        events = [event async for event in job.events()]
        await asyncio.to_thread(thread.join, 5.0)
        return results["before_text"], results["taken"], events

    before_text, taken, events = asyncio.run(main())
    assert before_text is False
    assert taken is True
    assert [type(event) for event in events] == [TextChunk, Finished]


def test_worker_goes_on_when_nobody_takes_the_text() -> None:
    async def main() -> tuple[bool, float]:
        job = _job(asyncio.get_running_loop())
        job.emit(TextChunk("Hel"))  # the loop is ours and busy here: nobody iterates the events
        started = time.monotonic()
        taken = job.wait_first_text_taken(0.05)
        return taken, time.monotonic() - started

    taken, waited = asyncio.run(main())
    assert taken is False
    assert waited < 5.0  # bounded by its timeout, not by a consumer that never comes
