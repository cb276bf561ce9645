"""Response plumbing that must hold even when the client goes away early."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that runs `on_close` exactly once however it ends.

    A generator that never started (the client left before the first byte) runs no `finally`, so
    cleanup placed only there would leak the upstream connection and the client lease.
    """

    def __init__(self, *args: Any, on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def once(action: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """`action`, made safe to call from several cleanup paths."""
    state = {"done": False}

    async def run() -> None:
        if not state["done"]:
            state["done"] = True
            await action()

    return run


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; cancel it if the client disconnects first (the backend then stops generating).

    Raises:
        ClientGone: the client went away.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            # Wait for the cancelled work to close its upstream connection before answering.
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone()
    return task.result()


class RequestId:
    """Gives every response a `request-id` header, as the Messages API does (`req_…`): clients show it in
    their errors, and the SDK exposes it as `request_id`. A response relayed from the real API keeps its own.

    A pure ASGI middleware placed outermost, so answers the guard refuses before routing carry one too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b"req_" + secrets.token_hex(12).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append((b"request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
