"""The running stack: the proxy on its fixed port and the backend behind it, in one event loop.

`serve`, the main command and `doctor --deep` all run a Stack; a config reload swaps its backend.
The proxy is bound before any backend starts, so a taken port fails fast with nothing started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterError, LaunchSpec, launch_spec
from launcher.config import BackendConfig, Settings
from launcher.errors import AnyclaudeError, BackendFatalError, ConfigError
from launcher.progress import Progress
from launcher.proxy import ProxyOptions, ProxyServer, Upstream, build_proxy, serve_proxy
from launcher.supervision.backoff import Backoff
from launcher.supervision.breaker import CircuitBreaker
from launcher.supervision.gate import SupervisorGate, upstream_for
from launcher.supervision.states import SERVING, ProcessState
from launcher.supervision.supervisor import Supervisor, Timings

if TYPE_CHECKING:
    from adapters.mlx_server.runtime import Runtime

log = logging.getLogger("anyclaude.stack")
S = ProcessState
TICK = 0.1
# `status` shows this many of the latest config edits, each cut to this many characters.
CONFIG_EVENTS_KEPT = 10
EVENT_CHARS = 600
# How often a drain looks at the requests still running on a backend.
DRAIN_POLL = 0.05

StateListener = Callable[[Supervisor, ProcessState, ProcessState, str], None]


def resolve_spec(settings: Settings) -> LaunchSpec:
    """The launch spec of the active backend. Raises ConfigError naming the file and entry."""
    import adapters  # noqa: F401  (fills the adapter registry)

    try:
        return launch_spec(settings.mode, settings.config)
    except AdapterError as exc:
        raise ConfigError(f"{settings.path}: {exc}", hint="Fix that backend entry, then run again.") from None


def supervision(entry: BackendConfig) -> tuple[Timings, Backoff]:
    """The supervisor's durations and restart policy from a backend entry's keys."""
    timings = Timings(
        startup_timeout=entry.startup_timeout / 1000,
        stop_timeout=entry.stop_timeout / 1000,
        health_interval=entry.health_interval / 1000,
        health_timeout=entry.health_timeout / 1000,
        health_failures=entry.health_failures,
    )
    backoff = Backoff(
        initial=entry.restart_delay / 1000,
        cap=entry.restart_delay_max / 1000,
        max_restarts=entry.max_restarts,
        stable_after=entry.stable_after / 1000,
    )
    return timings, backoff


def build_supervisor(settings: Settings, spec: LaunchSpec, transport: Any = None) -> Supervisor:
    entry = settings.entry
    timings, backoff = supervision(entry)
    breaker = CircuitBreaker(entry.breaker_failures, entry.breaker_reset_timeout / 1000, name=spec.name)
    from launcher.abilities import entry_tools

    tools = entry_tools(entry)
    return Supervisor(
        spec,
        settings.home,
        timings=timings,
        backoff=backoff,
        breaker=breaker,
        spawn_process=entry.auto_start_server,
        parent_death_signal=settings.parent_death_signal,
        log_max_bytes=settings.config.log_max_bytes,
        log_backups=settings.config.log_backups,
        config_path=str(settings.path) if settings.path else None,
        transport=transport,
        tools={"can_call": tools.can_call, "why": tools.why},
    )


def proxy_options(settings: Settings) -> ProxyOptions:
    config = settings.config
    return ProxyOptions(
        host=config.host,
        api_key=config.api_key.get_secret_value() if config.api_key else None,
        cors_origins=tuple(config.cors_origins),
        log_bodies=config.log_bodies,
        max_body_bytes=config.max_body_bytes,
        models=dict(config.models),
        first_byte_timeout=config.first_byte_timeout / 1000,
        idle_timeout=config.stream_idle_timeout / 1000,
        ping_interval=config.ping_interval / 1000,
        parse_text_tool_calls=config.parse_tool_calls_from_text,
        strip_billing_header=config.strip_billing_header,
    )


@dataclass
class Backend:
    """One supervised backend, its task, and how the proxy reaches it."""

    spec: LaunchSpec
    supervisor: Supervisor
    upstream: Upstream
    embedded: Runtime | None = None  # our MLX server run in this process (`embedded: true`)
    task: asyncio.Task[None] | None = None
    _lifespan: contextlib.AbstractAsyncContextManager[None] | None = None

    @property
    def wait_timeout(self) -> float:
        return self.supervisor.timings.startup_timeout

    async def start(self) -> None:
        """Load an embedded server's models (if any), then start the supervisor's owner task."""
        if self.embedded is not None:
            self._lifespan = self.embedded.lifespan()
            await self._lifespan.__aenter__()
        self.task = asyncio.create_task(self.supervisor.run(), name=f"supervisor-{self.spec.name}")

    async def stop(self, immediate: bool = False) -> None:
        self.supervisor.request_stop(immediate=immediate)
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        if self._lifespan is not None:
            lifespan, self._lifespan = self._lifespan, None
            await lifespan.__aexit__(None, None, None)


def build_backend(settings: Settings, spec: LaunchSpec) -> Backend:
    """Supervisor and upstream for `spec`; for an embedded backend, the in-process server app too."""
    runtime = transport = None
    if spec.in_process:
        from adapters.facts import with_folder_facts
        from adapters.mlx_server.adapter import server_config
        from adapters.mlx_server.app import app_runtime, create_app
        from launcher.asgi_transport import StreamingASGITransport

        entry = with_folder_facts(settings.config.backends[spec.name])
        app = create_app(server_config(spec.name, entry), embedded=True)
        runtime, transport = app_runtime(app), StreamingASGITransport(app)
    supervisor = build_supervisor(settings, spec, transport)
    return Backend(spec, supervisor, upstream_for(spec, settings.config.backends[spec.name], transport), runtime)


async def wait_started(
    backend: Backend, ui: Progress | None = None, first_failure: bool = False
) -> AnyclaudeError | None:
    """Wait for the backend's first READY (showing progress). Returns the error if it never gets there.

    `first_failure`: give up at the first failed start instead of after the whole backoff (a config
    change is rolled back at once rather than after half a minute of retries).
    """
    supervisor, spec = backend.supervisor, backend.spec
    failed = {S.FATAL, S.BACKOFF} if first_failure else {S.FATAL}
    if ui is not None:
        ui.begin(f"Starting {spec.name} ({spec.kind})" + (f" on port {spec.port}" if spec.port else ""))
    try:
        while backend.task is not None and not backend.task.done():
            if ui is not None:
                ui.tick(supervisor.log.last_line())
            if supervisor.state in SERVING:
                return None
            if supervisor.state in failed:
                return supervisor.error or BackendFatalError(supervisor.reason)
            await supervisor.wait_for(SERVING | failed, timeout=TICK)
        return supervisor.error or BackendFatalError(f"{spec.name} stopped while starting")
    finally:
        if ui is not None:
            ui.end()


class Stack:
    """The proxy and the current backend. `backend` changes only through `install` (a reload)."""

    def __init__(self, settings: Settings, on_state: StateListener | None = None) -> None:
        self.settings = settings
        self.on_state = on_state
        self.backend = build_backend(settings, resolve_spec(settings))
        self.gate = SupervisorGate(self.backend.supervisor, self.backend.upstream, self.backend.wait_timeout)
        from launcher.observe.wiring import Observability

        self.observe = Observability(self)  # request log, /metrics, /ui
        self.app, self.handlers = build_proxy(
            self.gate, proxy_options(settings), self.observe.recorder, self.observe.routes()
        )
        self.proxy: ProxyServer | None = None
        self.immediate = False
        self._stop_requested = asyncio.Event()
        self._retiring: dict[asyncio.Task[None], Backend] = {}  # replaced backends, draining then stopping
        self.config_events: collections.deque[dict[str, Any]] = collections.deque(maxlen=CONFIG_EVENTS_KEPT)

    @property
    def drain_timeout(self) -> float:
        return self.settings.config.drain_timeout / 1000

    def running(self, backend: Backend) -> int:
        """Requests running on `backend` now."""
        return self.gate.in_flight(backend.upstream)

    @property
    def proxy_address(self) -> str | None:
        """The proxy's URL once it listens, else None (what the dashboard shows)."""
        return self.proxy.url if self.proxy else None

    @property
    def proxy_url(self) -> str:
        assert self.proxy is not None, "the stack is not started"
        return self.proxy.url

    async def start(self) -> None:
        """Bind the proxy (PortInUseError: nothing started), then start the backend."""
        self.proxy = await serve_proxy(
            self.app,
            self.settings.config.host,
            self.settings.port,
            header_timeout=lambda: self.settings.config.header_timeout / 1000,
        )
        self.observe.start()
        await self.launch(self.backend)

    async def launch(self, backend: Backend) -> None:
        """Start a backend's supervisor, telling it where the proxy is and who listens to it."""
        supervisor = backend.supervisor
        if self.on_state is not None:
            listener = self.on_state
            supervisor.add_listener(lambda old, new, why: listener(supervisor, old, new, why))
        if self.proxy is not None:
            supervisor.proxy_url = self.proxy.url
        await backend.start()

    def install(self, backend: Backend, settings: Settings) -> None:
        """Route new requests to `backend` (already started); requests in flight finish where they are."""
        self.backend, self.settings = backend, settings
        self.gate.switch(backend.supervisor, backend.upstream, backend.wait_timeout)
        self.set_options(proxy_options(settings))
        backend.supervisor.save_state(list(self.config_events))

    def adopt(self, settings: Settings, spec: LaunchSpec) -> None:
        """Apply an edit that replaces no backend (`spec` launches what runs): proxy settings, the live keys
        (the model's facts as the proxy sees them) and the supervisor's keys (timeouts, restarts, breaker)."""
        entry, backend = settings.entry, self.backend
        supervisor = backend.supervisor
        backend.spec = supervisor.spec = spec
        supervisor.timings, policy = supervision(entry)
        for key in ("initial", "cap", "max_restarts", "stable_after"):  # its count of failures stays
            setattr(supervisor.backoff, key, getattr(policy, key))
        supervisor.breaker.failure_threshold = entry.breaker_failures
        supervisor.breaker.reset_timeout = entry.breaker_reset_timeout / 1000
        upstream = upstream_for(spec, entry, backend.upstream.transport)
        if upstream != backend.upstream:
            backend.upstream = upstream
            self.gate.switch(supervisor, upstream, backend.wait_timeout)
        self.settings = settings
        self.set_options(proxy_options(settings))

    def note_config_event(self, message: str, applied: bool) -> None:
        """Keep a config edit's outcome where `anyclaude status` reads it (the current backend's state file)."""
        self.config_events.append({"at": time.time(), "applied": applied, "message": message[:EVENT_CHARS]})
        self.backend.supervisor.save_state(list(self.config_events))

    def set_options(self, options: ProxyOptions) -> None:
        """Apply proxy settings that need no restart (key, origins, model map, timeouts, body size).

        The host stays the one the proxy is bound to: its checks (loopback Host names) must describe
        the socket that really listens, not one a config edit names but only a restart would bind.
        """
        bound = self.handlers.options.host
        self.handlers.options = dataclasses.replace(options, host=bound)

    def retire(self, old: Backend) -> tuple[int, asyncio.Task[None]]:
        """Drain a backend that `install` replaced, then stop it, in a task of its own.

        Returns how many requests it still runs (they finish there, up to `drainTimeout`) and the task,
        which `stop` waits for: a watcher cancelled mid-swap must not leave the old backend running.
        """
        running = self.running(old)
        task = asyncio.create_task(self._drain_and_stop(old), name=f"retire-{old.spec.name}")
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))
        return running, task

    async def drain(self, backend: Backend) -> int:
        """Wait until `backend` runs no request (or `drainTimeout`, or an immediate stop). Returns those left."""
        deadline = asyncio.get_running_loop().time() + self.drain_timeout
        while (left := self.running(backend)) and not self.immediate:
            if asyncio.get_running_loop().time() >= deadline:
                name, timeout = backend.spec.name, self.drain_timeout
                log.warning("%s: %d request(s) still running after %.0f s; stopping it", name, left, timeout)
                return left
            await asyncio.sleep(DRAIN_POLL)
        return 0

    async def _drain_and_stop(self, old: Backend) -> None:
        await self.drain(old)
        await old.stop(immediate=self.immediate)

    def request_stop(self, immediate: bool = False) -> None:
        """Ask the stack to end (a signal); `run_until_stopped` then returns and `stop` drains.

        A first request lets running requests finish (`stop` drains them); a second, or `immediate`,
        cuts them. A backend that is not serving yet has no request to finish and is stopped at once.
        """
        self.immediate = self.immediate or immediate
        self._stop_requested.set()
        self.gate.close("it was asked to stop")
        if self.immediate:
            if self.proxy is not None:
                self.proxy.force()
            for backend in self._backends():
                backend.supervisor.request_stop(immediate=True)
        elif self.backend.supervisor.state not in SERVING:
            self.backend.supervisor.request_stop()

    def request_restart(self) -> None:
        self.backend.supervisor.request_restart()

    async def run_until_stopped(self) -> None:
        """Wait for a stop request. A backend that ends otherwise (a swap replacing it) is not the end."""
        await self._stop_requested.wait()

    async def stop(self, immediate: bool = False) -> None:
        """Stop the proxy once its open responses finish (up to `drainTimeout`), then every backend."""
        self.immediate = self.immediate or immediate
        self.gate.close("it is stopping")
        with contextlib.suppress(Exception):
            if self.proxy is not None:
                # The dashboard's live streams end first: they would hold the drain open until its timeout.
                self.observe.stopping()
                await self.proxy.stop(grace=0.0 if self.immediate else self.drain_timeout)
        await self.backend.stop(immediate=self.immediate)
        await asyncio.gather(*list(self._retiring), return_exceptions=True)
        await self.observe.close()

    def _backends(self) -> list[Backend]:
        """The current backend and any still draining after a swap."""
        return [self.backend, *self._retiring.values()]


@contextlib.asynccontextmanager
async def running(settings: Settings, on_state: StateListener | None = None) -> AsyncIterator[Stack]:
    """A started Stack, stopped on exit (used by the main command and deep checks)."""
    stack = Stack(settings, on_state)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
