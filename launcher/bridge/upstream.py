"""The seam with the runtime: which backend to call (`Upstream`), whether it may be called
(`BackendGate`), and the keep-alive HTTP clients of each backend (`ClientPool`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore  # noqa: F401  # httpx imports it on the first client: ~0.1 s the first request would wait
import httpx

from adapters.base import ApiKind
from launcher.bridge.wire import AiohttpPoster, HttpxPoster, Poster


@dataclass(frozen=True)
class Upstream:
    """One backend as the proxy sees it.

    `base_url` is the OpenAI-style base including `/v1`, or the Anthropic API root for `api=anthropic`.
    `model` is the name put in requests (None: omit it; the official mlx_lm.server reloads from the
    Hub when given another name). `transport` is set for a backend mounted in this process.
    `accepts_images` is False for a model known to be text-only (see `LaunchSpec.accepts_images`).
    """

    name: str
    base_url: str
    api: ApiKind
    api_key: str | None = None
    model: str | None = None
    context_length: int | None = None
    max_output_tokens: int | None = None
    tokenize_url: str | None = None
    tokenizer_folder: str | None = None  # a local model folder whose tokenizer counts prompts
    passthrough: bool = False
    transport: httpx.AsyncBaseTransport | None = None
    accepts_images: bool | None = None  # False: refuse images here (the backend would drop them)
    short_tool_descriptions: bool = False  # a small model: tool descriptions cut to their first sentence

    def __repr__(self) -> str:  # the key must never reach a log through a repr
        return f"Upstream(name={self.name!r}, base_url={self.base_url!r}, api={self.api.value!r})"


class BackendUnavailable(Exception):
    """The backend cannot take requests now; the client gets 529 `overloaded_error` with Retry-After."""

    def __init__(self, message: str, retry_after: float, status: int = 529) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status


class Reporter(Protocol):
    def report(self, ok: bool) -> None: ...


class Lease:
    """One request's hold on a backend, from the gate: the upstream to call, counted in flight until its
    outcome is reported, and the charge of that outcome (to the breaker of the backend that served it, with
    the permit its breaker handed out: a half-open breaker's trial is this request, not whichever ends next).

    `report` counts once; later calls do nothing, so every exit path may report.
    """

    def __init__(self, upstream: Upstream, charge: Callable[[bool], None], done: Callable[[], None]) -> None:
        self.upstream = upstream
        self._charge = charge
        self._done = done
        self.reported = False

    def report(self, ok: bool) -> None:
        if not self.reported:
            self.reported = True
            self._done()
            self._charge(ok)


class BackendGate(Protocol):
    async def acquire(self) -> Lease:
        """A lease on the backend to call; waits while it starts, or raises BackendUnavailable."""
        ...

    def in_flight(self, upstream: Upstream) -> int:
        """Leases on `upstream` not yet reported (what a draining backend waits for)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Backend and breaker state for `GET /health`."""
        ...


class LeaseCounter:
    """Leases out per upstream (by identity: an in-place swap may build an upstream equal to the old one)."""

    def __init__(self) -> None:
        self._out: dict[int, int] = {}

    def lease(self, upstream: Upstream, charge: Callable[[bool], None]) -> Lease:
        key = id(upstream)
        self._out[key] = self._out.get(key, 0) + 1

        def done() -> None:
            left = self._out.get(key, 0) - 1
            if left > 0:
                self._out[key] = left
            else:
                self._out.pop(key, None)

        return Lease(upstream, charge, done)

    def count(self, upstream: Upstream) -> int:
        return self._out.get(id(upstream), 0)


class StaticGate:
    """An always-ready gate for one upstream (tests, and setups with nothing to supervise)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.reports: list[bool] = []
        self._leases = LeaseCounter()

    async def acquire(self) -> Lease:
        return self._leases.lease(self.upstream, self._record)

    def _record(self, ok: bool) -> None:
        self.reports.append(ok)
        del self.reports[:-1000]  # a long-running proxy must not grow this forever

    def in_flight(self, upstream: Upstream) -> int:
        return self._leases.count(upstream)

    def snapshot(self) -> dict[str, Any]:
        return {"backend": self.upstream.name, "state": "READY", "breaker": "closed"}


# Connecting to a local server takes microseconds; a slow connect means it is not listening yet.
CONNECT_TIMEOUT = 10.0


class ClientPool:
    """The clients of each upstream: an `httpx.AsyncClient` (pass-through, tokenize) and a `Poster` for
    `/v1/messages` (aiohttp over the network; httpx for a backend mounted in this process). Both are
    closed once a newer upstream replaced theirs and its last request finished (a backend swap must not
    cut the streams still running on the old one).
    """

    def __init__(self) -> None:
        # Loading the CA bundle takes 30-50 ms; done here once, at proxy start, instead of in the first
        # request to each upstream (every backend swap would pay it again).
        self._ssl = httpx.create_ssl_context()
        self._clients: dict[Upstream, tuple[httpx.AsyncClient, Poster]] = {}
        self._busy: dict[Upstream, int] = {}
        self._current: Upstream | None = None

    def _entry(self, upstream: Upstream) -> tuple[httpx.AsyncClient, Poster]:
        entry = self._clients.get(upstream)
        if entry is None:
            client = httpx.AsyncClient(
                transport=upstream.transport,
                verify=self._ssl,
                # Read timeouts are enforced per stream (first byte, idle), not by httpx.
                timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=60.0, pool=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=30.0),
                # An HTTP_PROXY in the environment must never route 127.0.0.1 traffic elsewhere.
                trust_env=False,
            )
            poster: Poster = (
                HttpxPoster(client) if upstream.transport is not None else AiohttpPoster(self._ssl, CONNECT_TIMEOUT)
            )
            entry = self._clients[upstream] = (client, poster)
            self._busy[upstream] = 0
        self._current = upstream
        return entry

    def checkout(self, upstream: Upstream) -> httpx.AsyncClient:
        """The httpx client for `upstream`; pair every checkout with one `checkin`."""
        client, _ = self._entry(upstream)
        self._busy[upstream] += 1
        return client

    def poster(self, upstream: Upstream) -> Poster:
        """The hot-path poster of an upstream checked out already."""
        return self._entry(upstream)[1]

    def in_flight(self, upstream: Upstream) -> int:
        """Requests checked out to `upstream` and not yet checked in (what a draining backend waits for)."""
        return self._busy.get(upstream, 0)

    async def checkin(self, upstream: Upstream) -> None:
        if upstream in self._busy:
            self._busy[upstream] -= 1
        await self._close_stale()

    async def _close_stale(self) -> None:
        for upstream in [u for u in self._clients if u != self._current and self._busy[u] == 0]:
            client, poster = self._clients.pop(upstream)
            del self._busy[upstream]
            await asyncio.gather(poster.aclose(), client.aclose(), return_exceptions=True)

    async def aclose(self) -> None:
        entries = list(self._clients.values())
        self._clients.clear()
        self._busy.clear()
        closing = [closer for client, poster in entries for closer in (poster.aclose(), client.aclose())]
        await asyncio.gather(*closing, return_exceptions=True)
