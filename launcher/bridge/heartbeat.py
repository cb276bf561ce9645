"""Pacing an upstream stream: `ping` markers while it is silent, and timeouts when it stays silent.

A cold prefill can take minutes before the first token; clients drop a connection that says nothing
for long (Claude Code's stream watchdog: 90 s), so a marker is yielded every `ping_interval`. A backend
that hangs must not hold a client forever, so silence past the limit the caller names raises: the
first-byte timeout until the first token, the idle timeout after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")


class Ping:
    """Yielded when the source was silent for one ping interval."""


PING_MARK = Ping()


class StreamTimeout(Exception):
    def __init__(self, seconds: float, first: bool) -> None:
        what = "before its first token" if first else "between tokens"
        super().__init__(f"the backend sent nothing for {seconds:g} s {what}")
        self.first = first


# Items read ahead of the consumer; bounds memory when the client reads slower than the backend writes.
READ_AHEAD = 64


class _End:
    """Put by the reader after the source's last item."""


_END = _End()


class _Failed:
    """Put by the reader when the source raised; the consumer re-raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _read(source: AsyncIterator[T], queue: asyncio.Queue[T | _End | _Failed]) -> None:
    try:
        async for item in source:
            await queue.put(item)  # returns at once unless READ_AHEAD items wait unread
    except Exception as exc:
        await queue.put(_Failed(exc))
        return
    await queue.put(_END)


# The allowed silence before the next item, and whether the first token is still awaited.
Limit = Callable[[], tuple[float, bool]]


async def paced(source: AsyncIterator[T], ping_interval: float, limit: Limit) -> AsyncIterator[T | Ping]:
    """Items of `source`, with PING_MARK during silences. Raises StreamTimeout, or what `source` raised.

    `limit` is asked before each wait how long the source may stay silent, and whether that wait is for
    the first token (for the timeout's message).

    One reader task per stream fills a queue and the consumer waits on the queue with a timer: a task
    and an `asyncio.wait` per item cost two loop turns per chunk, and lines that arrived in one TCP
    read are now handed over without any wait. A cancelled `queue.get()` loses nothing, so a ping
    never drops a chunk (cancelling the read itself would close the upstream connection).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue(READ_AHEAD)
    reader = asyncio.ensure_future(_read(source, queue))
    try:
        while True:
            if not queue.empty():
                item = queue.get_nowait()
            else:
                allowed, first = limit()
                deadline = loop.time() + allowed
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise StreamTimeout(allowed, first)
                    try:
                        async with asyncio.timeout(min(ping_interval, remaining)):
                            item = await queue.get()
                        break
                    except TimeoutError:
                        yield PING_MARK
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        # Stop reading when the consumer goes away or times out: a read left running keeps the
        # upstream connection busy after the response is gone.
        if not reader.done():
            reader.cancel()
