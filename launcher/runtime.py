"""`anyclaude serve`: one asyncio loop owns the supervisor; signals stop it in order.

Ctrl-C (or SIGTERM) once: orderly stop. Twice: immediate (SIGKILL to the backend's group).
SIGUSR1: restart the backend now (what `anyclaude restart` sends; it also clears FATAL).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from adapters.base import AdapterError, LaunchSpec, launch_spec
from launcher.applog import setup_logging
from launcher.backoff import Backoff
from launcher.config import Settings
from launcher.errors import AnyclaudeError, BackendFatalError, ConfigError
from launcher.progress import Progress
from launcher.states import ProcessState
from launcher.supervisor import Supervisor, Timings

log = logging.getLogger("anyclaude.runtime")
S = ProcessState
TICK = 0.1


def resolve_spec(settings: Settings) -> LaunchSpec:
    """The launch spec of the active backend. Raises ConfigError naming the file and entry."""
    import adapters  # noqa: F401  (fills the adapter registry)

    try:
        return launch_spec(settings.mode, settings.config)
    except AdapterError as exc:
        raise ConfigError(f"{settings.path}: {exc}", hint="Fix that backend entry, then run again.") from None


def build_supervisor(settings: Settings, spec: LaunchSpec) -> Supervisor:
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
    return Supervisor(
        spec,
        settings.home,
        timings=timings,
        backoff=backoff,
        spawn_process=entry.auto_start_server,
        parent_death_signal=settings.parent_death_signal,
        log_max_bytes=settings.config.log_max_bytes,
        log_backups=settings.config.log_backups,
        config_path=str(settings.path) if settings.path else None,
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


async def serve(settings: Settings, ui: Progress) -> int:
    """Start the active backend, keep it alive until a signal, stop it. Returns the exit code.

    Raises:
        AnyclaudeError: the backend could not be started at all (port held, command missing,
            FATAL before it was ever ready).
    """
    settings.home.ensure()
    handler = setup_logging(settings.home, settings.config)
    try:
        spec = resolve_spec(settings)
        supervisor = build_supervisor(settings, spec)
        return await _run(supervisor, spec, ui)
    finally:
        logging.getLogger("anyclaude").removeHandler(handler)
        handler.close()


async def _run(supervisor: Supervisor, spec: LaunchSpec, ui: Progress) -> int:
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
        await task
        return 0
    finally:
        signals.uninstall(loop)
        if not task.done():
            supervisor.request_stop(immediate=True)
            await asyncio.gather(task, return_exceptions=True)


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
