"""`/metrics`, the dashboard page `/ui`, its JSON API under `/ui/api/` and its live event stream.

Access is the API's: the proxy's guard checks the Host header and `apiKey` before these run (the
page and its static files hold no data and are open, so a browser can load them and then send the
key with each call). A request carrying an `Origin` must come from the page itself or a configured
`corsOrigins` entry, so another site open in the same browser can neither read the log nor roll back.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from launcher.bridge.errors import ApiError
from launcher.bridge.guard import origin_allowed
from launcher.bridge.handlers import error_response, json_response
from launcher.observe import store, usage, views
from launcher.observe.metrics import CONTENT_TYPE, Metrics
from launcher.observe.recorder import Recorder

if TYPE_CHECKING:
    from launcher.observe.views import StackView

Endpoint = Callable[[Request], Awaitable[Response]]
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
# The event stream looks for news at least this often (seconds); a new request wakes it at once.
EVENT_POLL = 1.0
KEEPALIVE = 15.0
MAX_ROWS = 1000


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("launcher.observe").joinpath("static", name).read_bytes()


class Dashboard:
    """The routes; `closing()` ends the event streams so the proxy can stop without waiting for them."""

    def __init__(self, stack: StackView, recorder: Recorder, metrics: Metrics) -> None:
        self.stack = stack
        self.recorder = recorder
        self.metrics = metrics
        self._closing = False

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/metrics", self._checked(self.prometheus), methods=["GET"]),
            Route("/ui", self.page, methods=["GET"]),
            Route("/ui/", self.page, methods=["GET"]),
            Route("/ui/static/{name}", self.static, methods=["GET"]),
            Route("/ui/api/state", self._checked(self.state), methods=["GET"]),
            Route("/ui/api/requests", self._checked(self.requests), methods=["GET"]),
            Route("/ui/api/usage", self._checked(self.usage), methods=["GET"]),
            Route("/ui/api/history", self._checked(self.history), methods=["GET"]),
            Route("/ui/api/rollback", self._checked(self.rollback), methods=["POST"]),
            Route("/ui/api/doctor", self._checked(self.doctor), methods=["GET"]),
            Route("/ui/events", self._checked(self.events), methods=["GET"]),
        ]

    def closing(self) -> None:
        self._closing = True
        self.recorder.wake()

    # ------------------------------------------------------------------ access

    def _checked(self, endpoint: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            refused = self._origin_refusal(request)
            if refused is not None:
                return error_response(refused)
            try:
                return await endpoint(request)
            except ApiError as exc:
                return error_response(exc)

        return run

    def _origin_refusal(self, request: Request) -> ApiError | None:
        origin = request.headers.get("origin")
        if origin is None:
            return None
        if origin_allowed(origin, self.stack.settings.config.cors_origins, request.headers.get("host", "")):
            return None
        return ApiError(403, f"requests from {origin} may not use this endpoint (add it to corsOrigins to allow it)")

    # ------------------------------------------------------------------ pages

    async def page(self, request: Request) -> Response:
        # No caching, no framing by other sites, no scripts but our own.
        headers = {
            "cache-control": "no-store",
            "x-frame-options": "DENY",
            "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
        }
        return Response(_static("index.html"), media_type="text/html", headers=headers)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return error_response(ApiError(404, f"not found: {request.url.path}"))
        return Response(_static(name), media_type=STATIC[name], headers={"cache-control": "no-cache"})

    async def prometheus(self, request: Request) -> Response:
        view = await views.metrics_view(self.stack)
        return Response(self.metrics.render(view, self.recorder.dropped), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ data

    async def state(self, request: Request) -> Response:
        settings = self.stack.settings
        path = self.recorder.path
        body = {
            **await views.backend_state(self.stack),
            "proxy": self.stack.proxy_address,
            "request_log": {
                "enabled": settings.config.request_log,
                "path": str(path),
                "bytes": store.disk_size(path),
                "bodies": settings.config.log_bodies,
            },
            "logs": views.log_names(settings.home.logs),
        }
        return json_response(body)

    async def requests(self, request: Request) -> Response:
        query = request.query_params
        after, limit = _int("after", query.get("after"), 0), min(_int("limit", query.get("limit"), 200), MAX_ROWS)
        found = await asyncio.to_thread(self._rows, after, limit)
        return json_response({"requests": found})

    def _rows(self, after: int, limit: int) -> list[dict[str, Any]]:
        with store.reader(self.recorder.path) as conn:
            return [] if conn is None else store.rows(conn, limit, after)

    async def usage(self, request: Request) -> Response:
        try:
            since = usage.parse_since(request.query_params.get("since"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        by = request.query_params.get("by") or None
        if by is not None and by not in usage.GROUPS:
            raise ApiError(400, f"by: one of {', '.join(usage.GROUPS)}")

        def compute() -> list[dict[str, Any]]:
            with store.reader(self.recorder.path) as conn:
                return [s.as_dict() for s in usage.summarize(conn, since, by)]

        return json_response({"usage": await asyncio.to_thread(compute)})

    async def history(self, request: Request) -> Response:
        from launcher.history import snapshots

        found = snapshots(self.stack.settings.home)
        rows = [{"index": i, "saved_at": s.saved_at, "digest": s.digest} for i, s in enumerate(found)]
        return json_response({"config": _str(self.stack.settings.path), "snapshots": rows})

    async def rollback(self, request: Request) -> Response:
        from launcher.history import rollback

        if "application/json" not in request.headers.get("content-type", ""):
            raise ApiError(415, 'send the rollback as application/json: {"index": N}')
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, 'the body must be JSON: {"index": N}') from None
        index = body.get("index") if isinstance(body, dict) else None
        if not isinstance(index, int) or isinstance(index, bool):
            raise ApiError(400, 'index: give the snapshot number, e.g. {"index": 1}')
        path = self.stack.settings.path
        if path is None:
            raise ApiError(409, "this anyclaude runs the built-in default: there is no config file to roll back")
        from launcher.errors import AnyclaudeError

        try:
            snap = await asyncio.to_thread(rollback, self.stack.settings.home, path, index)
        except AnyclaudeError as exc:
            raise ApiError(400, exc.message) from None
        return json_response({"ok": True, "index": index, "digest": snap.digest, "config": str(path)})

    async def doctor(self, request: Request) -> Response:
        from launcher.doctor import run_checks

        settings = self.stack.settings
        path = _str(settings.path)
        checks = await asyncio.to_thread(run_checks, path, settings.mode, dict(os.environ), settings.home)
        rows = [{"name": c.name, "status": str(c.status), "finding": c.finding, "fix": c.fix} for c in checks]
        return json_response({"checks": rows})

    # ------------------------------------------------------------------ live updates

    async def events(self, request: Request) -> Response:
        name = request.query_params.get("log") or ""
        logs = self.stack.settings.home.logs
        tail = views.LogTail(logs / f"{name}.log") if name in views.log_names(logs) else None
        after = _int("after", request.query_params.get("after"), 0)
        return StreamingResponse(
            self._events(after, tail), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    async def _events(self, after: int, tail: views.LogTail | None) -> AsyncIterator[bytes]:
        """`requests` (new rows), `backends` (on change) and `log` (new lines) events until the proxy stops."""
        yield b"retry: 2000\n\n"
        last_state: Any = None
        quiet_since = time.monotonic()
        while not self._closing:
            sent = False
            found = await asyncio.to_thread(self._rows, after, MAX_ROWS)
            if found:
                after = found[-1]["id"]
                yield _event("requests", found)
                sent = True
            state = await views.backend_state(self.stack)
            if state != last_state:
                last_state = state
                yield _event("backends", state)
                sent = True
            lines = await asyncio.to_thread(tail.read) if tail is not None else []
            if lines:
                yield _event("log", lines)
                sent = True
            if sent:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
            await self.recorder.wait_for_new(EVENT_POLL)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _int(name: str, value: str | None, default: int) -> int:
    """A query's whole number, negatives as 0; one past what the request log's ids can hold is a 400
    (SQLite cannot bind it: the query would fail with a 500, or cut an event stream already started)."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name}: {value[:40]!r} is not a whole number") from None
    if abs(number) > store.MAX_ID:
        raise ApiError(400, f"{name}: give a whole number from 0 to {store.MAX_ID}") from None
    return max(0, number)


def _str(value: object) -> str | None:
    return None if value is None else str(value)
