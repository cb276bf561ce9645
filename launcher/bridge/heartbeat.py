"""Pacing an upstream stream: `ping` markers while it is silent, and timeouts when it stays silent.

A cold prefill can take minutes before the first chunk; clients drop a connection that says nothing
for long, so a marker is yielded every `ping_interval`. A backend that hangs must not hold a
client forever, so silence past the first-byte or idle timeout raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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


async def paced(
    source: AsyncIterator[T], ping_interval: float, first_timeout: float, idle_timeout: float
) -> AsyncIterator[T | Ping]:
    """Items of `source`, with PING_MARK during silences. Raises StreamTimeout."""
    loop = asyncio.get_running_loop()
    first = True
    while True:
        limit = first_timeout if first else idle_timeout
        deadline = loop.time() + limit
        step: asyncio.Future[T] = asyncio.ensure_future(source.__anext__())
        try:
            while not step.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise StreamTimeout(limit, first)
                done, _ = await asyncio.wait((step,), timeout=min(ping_interval, remaining))
                if not done:
                    yield PING_MARK
            try:
                item = step.result()
            except StopAsyncIteration:
                return
        finally:
            # Cancel a pending read when the consumer goes away or times out: otherwise it keeps the
            # upstream connection busy after the response is gone.
            if not step.done():
                step.cancel()
        first = False
        yield item
