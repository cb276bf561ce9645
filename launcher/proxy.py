"""The proxy Claude Code talks to: an app factory and a uvicorn runner for an existing event loop.

The runtime builds one app with `create_proxy_app(gate, options)` and runs it with `serve_proxy`;
the gate decides which backend answers each request and keeps a failing one from being hammered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from launcher.bridge.asgi import RequestId
from launcher.bridge.errors import ApiError
from launcher.bridge.guard import Guard, LiveCors
from launcher.bridge.handlers import Handlers, error_response
from launcher.bridge.options import ProxyOptions
from launcher.bridge.upstream import BackendGate, BackendUnavailable, StaticGate, Upstream
from launcher.errors import PortInUseError
from launcher.observe.hook import NO_OBSERVER, Observer
from launcher.supervision.ports import holder_of

log = logging.getLogger("anyclaude.proxy")
# Seconds a client gets to send its request headers (config: headerTimeout).
DEFAULT_HEADER_TIMEOUT = 10.0

__all__ = [
    "BackendGate",
    "BackendUnavailable",
    "ProxyOptions",
    "ProxyServer",
    "StaticGate",
    "Upstream",
    "build_proxy",
    "create_proxy_app",
    "serve_proxy",
]


def create_proxy_app(
    gate: BackendGate, options: ProxyOptions, observer: Observer = NO_OBSERVER, extra: Sequence[BaseRoute] = ()
) -> Starlette:
    """The proxy's ASGI app (see `build_proxy`)."""
    return build_proxy(gate, options, observer, extra)[0]


def build_proxy(
    gate: BackendGate, options: ProxyOptions, observer: Observer = NO_OBSERVER, extra: Sequence[BaseRoute] = ()
) -> tuple[Starlette, Handlers]:
    """The proxy's ASGI app: `/v1/messages`, `/v1/messages/count_tokens`, `/v1/models`, `/health`, `/`, and
    its handlers, whose `options` a config edit replaces (the runtime holds them; nothing reads `app.state`).

    A plain Starlette app: the endpoints read their own bodies and build their own responses, and
    FastAPI's per-request dependency solving and extra middleware cost ~0.1 ms per request for nothing.
    `observer` keeps the request log; `extra` routes (`/metrics`, `/ui`) sit behind the same guard.
    """
    handlers = Handlers(gate, options, observer)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await handlers.aclose()  # keep-alive connections to backends end with the proxy

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 400
        message = {404: f"not found: {request.url.path}", 405: f"method {request.method} not allowed here"}
        return error_response(ApiError(status, message.get(status, str(getattr(exc, "detail", exc)))))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, "internal error in the proxy; see the anyclaude log"))

    # Outermost first: every answer gets a request id; the guard refuses foreign hosts and origins and missing
    # keys before anything else runs. Both read the handlers' options per request: a config edit replaces them
    # (Stack.set_options).
    def current() -> ProxyOptions:
        return handlers.options

    middleware = [Middleware(RequestId), Middleware(Guard, options=current), Middleware(LiveCors, options=current)]
    app = Starlette(
        routes=[
            Route("/v1/messages", handlers.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", handlers.count_tokens, methods=["POST"]),
            Route("/v1/models", handlers.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", handlers.get_model, methods=["GET"]),
            Route("/health", handlers.health, methods=["GET", "HEAD"]),
            Route("/", handlers.root, methods=["GET", "HEAD"]),
            *extra,
        ],
        middleware=middleware,
        exception_handlers={StarletteHTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    return app, handlers


# --------------------------------------------------------------------------------------------
# Running


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port. Raises PortInUseError naming the holder (docs/reliability.md 6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; with proto 0
    # every small write waits for the peer's delayed ACK (~40 ms per response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # SO_REUSEADDR lets a restarted proxy bind over its own TIME_WAIT sockets; on Linux it never lets
    # two listeners share a port, so a foreign server is still detected.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"Port {port} is in use by {holder_of(port).describe()}.",
                hint="Stop it, or set `port` in .anyclauderc.json (or ANYCLAUDE_PORT).",
            ) from None
        raise PortInUseError(f"Cannot listen on {host}:{port} ({exc.strerror}).", hint="Check `host`.") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def header_timeout_protocol(timeout: Callable[[], float]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing a connection whose request headers take longer than `timeout()` s.

    uvicorn itself waits forever for headers: a silent connection, or one sending a byte a second (a
    slowloris), holds a socket and a slot for as long as the client likes. The clock starts when the
    connection opens and when the first byte of each next request arrives; complete headers stop it.
    An idle keep-alive connection between requests is uvicorn's own keep-alive timeout's business.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self._awaiting_headers():
                self._arm()
            super().data_received(data)
            if not self._awaiting_headers():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _awaiting_headers(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(cycle.response_complete)

        def _arm(self) -> None:
            seconds = timeout()
            if seconds > 0:
                self._header_timer = asyncio.get_running_loop().call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self._awaiting_headers() and not self.transport.is_closing():
                log.info("closing a connection that sent no complete request headers within %.0f s", timeout())
                self.transport.close()

    return HeaderTimeoutProtocol


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The runtime owns SIGINT/SIGTERM and stops the proxy in order; uvicorn must not take them.
        yield


class ProxyServer:
    """A running proxy. `stop()` finishes open responses (up to `grace` seconds), then closes."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket) -> None:
        self._server = server
        self.task = task
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting connections, let open responses finish (up to `grace` s), then close."""
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self._server.force_exit = True  # streams still open after the grace period are cut
            await self.task
        finally:
            self._sock.close()

    def force(self) -> None:
        """End a `stop` that is waiting for open responses now (a second Ctrl-C)."""
        self._server.should_exit = True
        self._server.force_exit = True

    async def wait(self) -> None:
        await self.task


async def serve_proxy(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    header_timeout: Callable[[], float] = lambda: DEFAULT_HEADER_TIMEOUT,
) -> ProxyServer:
    """Start serving `app` on host:port inside the running loop; returns once it accepts connections.

    `header_timeout()` is read for each connection (a config edit changes it for the next ones).

    Raises:
        PortInUseError: the port is taken (nothing is started then).
    """
    sock = bind_socket(host, port)
    config = uvicorn.Config(
        app,
        http=header_timeout_protocol(header_timeout),
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=None,
        # Claude Code keeps its connection between turns; a short keep-alive would drop it each time.
        timeout_keep_alive=75,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="anyclaude-proxy")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what stopped it
            raise RuntimeError("the proxy stopped while starting")
        await asyncio.sleep(0.005)
    return ProxyServer(server, task, sock)
