"""Who may talk to the proxy: Host header allow-list, Origin allow-list, API key, body size
(docs/reliability.md 17, 20, 21, 28), and CORS headers for the origins allowed.

Pure ASGI middleware: it runs before routing, costs a few dict lookups, and never buffers or wraps a
streaming response (Starlette's BaseHTTPMiddleware would, and breaks disconnect handling). Both read
the proxy's options on every request, so a config edit of `apiKey`, `corsOrigins` or `maxBodyBytes`
applies to the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from launcher.bridge.errors import ApiError
from launcher.bridge.options import LOOPBACK_HOSTS, ProxyOptions

# Probes that carry no key: Claude Code's `HEAD /` at start, and health checks. The dashboard's page
# and files hold no data: a browser loads them without a key, then sends it with each API call.
OPEN_PATHS = frozenset({"/", "/health", "/ui", "/ui/"})
OPEN_PREFIX = "/ui/static/"
STOPPED_MESSAGE = "anyclaude stopped before the backend answered this request; retry once it runs again"
Options = Callable[[], ProxyOptions]


def host_name(value: str) -> str:
    """`localhost:8080` → `localhost`, `[::1]:8080` → `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def origin_allowed(origin: str, allowed: tuple[str, ...] | list[str], host: str | None = None) -> bool:
    """The one origin rule: an `Origin` header's value is allowed when `corsOrigins` lists it (or "*"), or when
    it is the proxy's own (`http://<host>`: the dashboard's page calling the proxy)."""
    return "*" in allowed or origin in allowed or (host is not None and origin == f"http://{host}")


class Guard:
    def __init__(self, app: ASGIApp, options: Options) -> None:
        self.app = app
        self.options = options
        self._seen: ProxyOptions | None = None
        self._key: bytes | None = None

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
        options = self.options()
        if options is not self._seen:  # a config edit: the key may have come, gone or changed
            self._seen, self._key = options, options.api_key.encode() if options.api_key else None
        headers = dict(scope["headers"])  # later duplicates win; none of these may legitimately repeat
        if options.loopback:
            # A browser page on another site can reach 127.0.0.1 through DNS rebinding; its Host
            # header is then the attacker's name, never a loopback one.
            host = headers.get(b"host")
            if host is not None and host_name(host.decode("latin-1")) not in LOOPBACK_HOSTS:
                return ApiError(403, "this proxy answers only requests addressed to localhost, 127.0.0.1 or [::1]")
        origin = headers.get(b"origin")
        host = headers.get(b"host", b"").decode("latin-1")
        if origin is not None and not origin_allowed(origin.decode("latin-1"), options.cors_origins, host):
            # A page's "simple" request (text/plain POST) needs no preflight: refused here, it never runs.
            shown = origin.decode("latin-1")[:200]
            return ApiError(
                403, f"requests from web pages at {shown} are not allowed; list the origin in corsOrigins to allow it"
            )
        preflight = scope["method"] == "OPTIONS" and origin is not None  # carries no key, by the CORS rules
        path = scope["path"]
        keyless = path in OPEN_PATHS or path.startswith(OPEN_PREFIX) or preflight
        if self._key is not None and not keyless and not self._authorized(headers):
            return ApiError(401, "invalid x-api-key: send the proxy's apiKey as x-api-key or Authorization: Bearer")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return ApiError(400, "content-length is not a number")
            if size > options.max_body_bytes:
                return too_large(options.max_body_bytes)
        return None

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self._key is not None
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        # compare_digest: the time taken must not reveal how much of the key matched.
        return hmac.compare_digest(given, self._key)


class LiveCors:
    """CORS headers for `corsOrigins` as they are now (none while the list is empty)."""

    def __init__(self, app: ASGIApp, options: Options) -> None:
        self.app = app
        self.options = options
        self._origins: tuple[str, ...] = ()
        self._cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origins = self.options().cors_origins
        if not origins or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if origins != self._origins or self._cors is None:
            self._origins = origins
            self._cors = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
                allow_headers=["*"],
            )
        await self._cors(scope, receive, send)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit} bytes")


async def send_error(send: Send, error: ApiError) -> None:
    body = error.body_bytes()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
