"""`anyclaude serve`: one asyncio loop owns the proxy and the supervisor; signals stop them in order.

Ctrl-C (or SIGTERM) once: orderly stop. Twice: immediate (SIGKILL to the backend's group).
SIGUSR1: restart the backend now (what `anyclaude restart` sends; it also clears FATAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from adapters.base import AdapterError, LaunchSpec, launch_spec
from launcher.applog import setup_logging
from launcher.backoff import Backoff
from launcher.breaker import CircuitBreaker
from launcher.config import Settings
from launcher.errors import AnyclaudeError, BackendFatalError, ConfigError
from launcher.gate import SupervisorGate, upstream_for
from launcher.progress import Progress
from launcher.proxy import ProxyOptions, Upstream, create_proxy_app, serve_proxy
from launcher.states import SERVING, ProcessState
from launcher.supervisor import Supervisor, Timings

log = logging.getLogger("anyclaude.runtime")
S = ProcessState
TICK = 0.1
# Seconds open responses get to finish when the proxy stops.
PROXY_GRACE = 3.0


def resolve_spec(settings: Settings) -> LaunchSpec:
    """The launch spec of the active backend. Raises ConfigError naming the file and entry."""
    import adapters  # noqa: F401  (fills the adapter registry)

    try:
        return launch_spec(settings.mode, settings.config)
    except AdapterError as exc:
        raise ConfigError(f"{settings.path}: {exc}", hint="Fix that backend entry, then run again.") from None


def build_supervisor(settings: Settings, spec: LaunchSpec, transport: Any = None) -> Supervisor:
    entry = settings.entry
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
    breaker = CircuitBreaker(entry.breaker_failures, entry.breaker_reset_timeout / 1000, name=spec.name)
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
    )


@dataclass
class _Signals:
    """Counts stop signals: the first asks for an orderly stop, the second for an immediate one."""

    supervisors: list[Supervisor]
    ui: Progress
    count: int = 0
    installed: list[signal.Signals] = field(default_factory=list)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.on_stop, sig)
            self.installed.append(sig)
        loop.add_signal_handler(signal.SIGUSR1, self.on_restart)
        self.installed.append(signal.SIGUSR1)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self.installed:
            loop.remove_signal_handler(sig)

    def on_stop(self, sig: signal.Signals) -> None:
        self.count += 1
        immediate = self.count > 1
        self.ui.line("Stopping now." if immediate else f"{sig.name}: stopping (press Ctrl-C again to force).")
        for sup in self.supervisors:
            sup.request_stop(immediate=immediate)

    def on_restart(self) -> None:
        self.ui.line("Restart requested.")
        for sup in self.supervisors:
            sup.request_restart()


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
    """One supervised backend and how the proxy reaches it."""

    spec: LaunchSpec
    supervisor: Supervisor
    upstream: Upstream
    embedded_app: Any = None

    @property
    def wait_timeout(self) -> float:
        return self.supervisor.timings.startup_timeout


def build_backend(settings: Settings, spec: LaunchSpec) -> Backend:
    """Supervisor and upstream for `spec`; for an embedded backend, the in-process server app too."""
    app = transport = None
    if spec.in_process:
        from adapters.mlx_server.adapter import server_config
        from adapters.mlx_server.app import create_app
        from launcher.asgi_transport import StreamingASGITransport

        app = create_app(server_config(spec.name, settings.config.backends[spec.name]), embedded=True)
        transport = StreamingASGITransport(app)
    supervisor = build_supervisor(settings, spec, transport)
    return Backend(spec, supervisor, upstream_for(spec, settings.config.backends[spec.name], transport), app)


async def serve(settings: Settings, ui: Progress) -> int:
    """Bind the proxy, start the active backend, serve until a signal, stop both. Returns the exit code.

    Raises:
        AnyclaudeError: the proxy's port is taken (nothing is started then), or the backend could not
            be started at all (port held, command missing, FATAL before it was ever ready).
    """
    settings.home.ensure()
    handler = setup_logging(settings.home, settings.config)
    try:
        backend = build_backend(settings, resolve_spec(settings))
        gate = SupervisorGate(backend.supervisor, backend.upstream, backend.wait_timeout)
        # RELIABILITY 6: the proxy's port is checked (bound) before any backend is started.
        proxy = await serve_proxy(create_proxy_app(gate, proxy_options(settings)), settings.config.host, settings.port)
        backend.supervisor.proxy_url = proxy.url
        try:
            async with _embedded(backend):
                return await _run(backend.supervisor, backend.spec, ui, proxy.url)
        finally:
            await proxy.stop(grace=PROXY_GRACE)
    finally:
        logging.getLogger("anyclaude").removeHandler(handler)
        handler.close()


@contextlib.asynccontextmanager
async def _embedded(backend: Backend) -> AsyncIterator[None]:
    """Load an embedded backend's models in this process for as long as it serves."""
    if backend.embedded_app is None:
        yield
        return
    async with backend.embedded_app.state.runtime.lifespan():
        yield


async def _run(supervisor: Supervisor, spec: LaunchSpec, ui: Progress, proxy_url: str) -> int:
    loop = asyncio.get_running_loop()
    signals = _Signals([supervisor], ui)
    signals.install(loop)
    supervisor.add_listener(lambda old, new, why: _announce(ui, supervisor, old, new, why))
    task = asyncio.create_task(supervisor.run(), name=f"supervisor-{spec.name}")
    try:
        error = await _startup(supervisor, spec, ui, task)
        if error is not None:
            supervisor.request_stop()
            await task
            raise error
        if supervisor.state in SERVING:
            _print_endpoint(ui, proxy_url)
        await task
        return 0
    finally:
        signals.uninstall(loop)
        if not task.done():
            supervisor.request_stop(immediate=True)
            await asyncio.gather(task, return_exceptions=True)


def _print_endpoint(ui: Progress, proxy_url: str) -> None:
    ui.line(f"Serving the Anthropic API at {proxy_url}. From another shell:")
    ui.line(f"  export ANTHROPIC_BASE_URL={proxy_url} ANTHROPIC_API_KEY=local; claude")


async def _startup(
    supervisor: Supervisor, spec: LaunchSpec, ui: Progress, task: asyncio.Task[None]
) -> AnyclaudeError | None:
    """Show progress until the first READY. Returns the error to exit with if it never gets there."""
    what = f"Starting {spec.name} ({spec.kind})"
    ui.begin(what + (f" on port {spec.port}" if spec.port else ""))
    try:
        while not task.done():
            ui.tick(supervisor.log.last_line())
            if supervisor.state in (S.READY, S.DEGRADED):
                return None
            if supervisor.state is S.FATAL:
                return supervisor.error or BackendFatalError(supervisor.reason)
            await supervisor.wait_for({S.READY, S.DEGRADED, S.FATAL}, timeout=TICK)
        return None
    finally:
        ui.end()


def _announce(ui: Progress, supervisor: Supervisor, old: ProcessState, new: ProcessState, why: str) -> None:
    spec = supervisor.spec
    if new is S.BACKOFF and supervisor.error is not None:
        # RELIABILITY 2: a backend that dies while starting is reported at once, with its last log lines.
        ui.line(f"✗ {supervisor.error.message}", style="red")
    if new is S.READY:
        where = f" at {spec.base_url}" if spec.base_url else ""
        ui.line(f"✓ {spec.name} is ready{where} ({why}).", style="green")
    elif new in (S.BACKOFF, S.DEGRADED):
        ui.line(f"! {spec.name} {new}: {why}", style="yellow")
    elif new is S.FATAL:
        ui.line(f"✗ {spec.name} FATAL: {why}", style="red")
    elif new is S.STOPPED and old is S.STOPPING:
        ui.line(f"{spec.name} stopped.")
