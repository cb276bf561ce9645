"""Who may talk to the proxy: Host header allow-list, API key, body size (RELIABILITY 17, 20, 21).

A pure ASGI middleware: it runs before routing, costs a few dict lookups, and never buffers or
wraps a streaming response (Starlette's BaseHTTPMiddleware would, and breaks disconnect handling).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from launcher.bridge.errors import ApiError
from launcher.bridge.options import LOOPBACK_HOSTS, ProxyOptions

# Probes that carry no key: Claude Code's `HEAD /` at start, and health checks.
OPEN_PATHS = frozenset({"/", "/health"})
STOPPED_MESSAGE = "anyclaude stopped before the backend answered this request; retry once it runs again"


def host_name(value: str) -> str:
    """`localhost:8080` → `localhost`, `[::1]:8080` → `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    def __init__(self, app: ASGIApp, options: ProxyOptions) -> None:
        self.app = app
        self.options = options
        self._key = options.api_key.encode() if options.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._check(scope)
        if error is not None:
            await send_error(send, error)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            # The server is being torn down under a request that has no answer yet (it was waiting for a
            # backend, or for one's reply): the client gets an error it can parse, never a text/plain 500.
            if not started:
                with contextlib.suppress(Exception):
                    await send_error(send, ApiError(503, STOPPED_MESSAGE))
            raise

    def _check(self, scope: Scope) -> ApiError | None:
        headers = dict(scope["headers"])  # later duplicates win; none of these may legitimately repeat
        if self.options.loopback:
            # A browser page on another site can reach 127.0.0.1 through DNS rebinding; its Host
            # header is then the attacker's name, never a loopback one.
            host = headers.get(b"host")
            if host is not None and host_name(host.decode("latin-1")) not in LOOPBACK_HOSTS:
                return ApiError(403, "this proxy answers only requests addressed to localhost, 127.0.0.1 or [::1]")
        if self._key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
            return ApiError(401, "invalid x-api-key: send the proxy's apiKey as x-api-key or Authorization: Bearer")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return ApiError(400, "content-length is not a number")
            if size > self.options.max_body_bytes:
                return too_large(self.options.max_body_bytes)
        return None

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self._key is not None
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        # compare_digest: the time taken must not reveal how much of the key matched.
        return hmac.compare_digest(given, self._key)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit} bytes")


async def send_error(send: Send, error: ApiError) -> None:
    body = error.body_bytes()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
