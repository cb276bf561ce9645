"""An httpx transport that calls an ASGI app in this process and streams its response.

httpx's own `ASGITransport` waits for the whole response body before returning, so a streamed
completion from an embedded backend would arrive in one piece at the end: no pings, no
time-to-first-token. This one hands each body chunk over as the app sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

_END = b""


class _QueueStream(httpx.AsyncByteStream):
    def __init__(self, queue: asyncio.Queue[bytes | BaseException], task: asyncio.Task[None], gone: asyncio.Event):
        self._queue = queue
        self._task = task
        self._gone = gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise httpx.ReadError(f"embedded backend failed: {item}") from item
            if item is _END:
                return
            yield item

    async def aclose(self) -> None:
        # The client stopped reading: tell the app (it cancels its generation), then make sure it ends.
        self._gone.set()
        if not self._task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
        if not self._task.done():
            self._task.cancel()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        started = asyncio.Event()
        gone = asyncio.Event()
        head: dict[str, Any] = {}
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head["status"] = message["status"]
                head["headers"] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
                started.set()
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    queue.put_nowait(message["body"])
                if not message.get("more_body", False):
                    queue.put_nowait(_END)

        async def run() -> None:
            try:
                await self.app(_scope(request), receive, send)
            except BaseException as exc:  # surfaced to the reader; the task itself must not die loudly
                queue.put_nowait(exc)
                started.set()
            finally:
                queue.put_nowait(_END)

        task = asyncio.create_task(run())
        await started.wait()
        if "status" not in head:
            await task
            raise httpx.ConnectError("embedded backend failed before answering")
        return httpx.Response(head["status"], headers=head["headers"], stream=_QueueStream(queue, task, gone))


def _scope(request: httpx.Request) -> dict[str, Any]:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?")[0],
        "query_string": url.query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "client": ("127.0.0.1", 0),
        "server": (url.host, url.port or 80),
    }
