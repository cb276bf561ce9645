"""The two ways anyclaude runs: `serve` (proxy + backend until Ctrl-C) and the main command (the same,
with Claude Code in the terminal until it exits).

Under `serve`: Ctrl-C (or SIGTERM) once stops everything in order, letting running requests finish
(up to `drainTimeout`); twice, at once. While Claude Code
runs, Ctrl-C is Claude Code's; when it exits, everything stops and its exit code is ours.
SIGUSR1 restarts the backend now (what `anyclaude restart` sends; it also clears FATAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapters.facts import ModelFacts
from launcher import exposure
from launcher.applog import setup_logging, teardown_logging
from launcher.config import Settings
from launcher.control import find_proxy
from launcher.diskfull import TROUBLE
from launcher.errors import BackendFatalError, ConfigError
from launcher.history import record_applied
from launcher.loop import add_signal_handler, remove_signal_handler
from launcher.preflight import preflight
from launcher.progress import Progress
from launcher.reload import start_watching
from launcher.stack import Stack, wait_started
from launcher.supervision.states import ProcessState
from launcher.supervision.supervisor import Supervisor

log = logging.getLogger("anyclaude.runtime")
S = ProcessState


@dataclass
class _Signals:
    """Counts stop signals: the first asks for an orderly stop, the second for an immediate one."""

    stack: Stack
    ui: Progress
    count: int = 0
    installed: list[signal.Signals] = field(default_factory=list)

    def install(self, loop: asyncio.AbstractEventLoop, stops: Sequence[signal.Signals]) -> None:
        for sig in stops:
            add_signal_handler(loop, sig, self.on_stop, sig)
            self.installed.append(sig)
        add_signal_handler(loop, signal.SIGUSR1, self.on_restart)
        self.installed.append(signal.SIGUSR1)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self.installed:
            remove_signal_handler(loop, sig)
        self.installed.clear()

    def on_stop(self, sig: signal.Signals) -> None:
        self.count += 1
        immediate = self.count > 1
        log.info("%s: %s", sig.name, "stopping now" if immediate else "stopping once running requests finish")
        if immediate:
            self.ui.line("Stopping now.")
        else:
            wait = f"{self.stack.drain_timeout:.0f}"
            self.ui.line(
                f"{sig.name}: stopping once running requests finish (at most {wait} s; press Ctrl-C again to force)."
            )
        self.stack.request_stop(immediate=immediate)

    def on_restart(self) -> None:
        log.info("SIGUSR1: restart requested")
        self.ui.line("Restart requested.")
        self.stack.request_restart()


def announce(ui: Progress) -> Callable[[Supervisor, ProcessState, ProcessState, str], None]:
    def on_state(supervisor: Supervisor, old: ProcessState, new: ProcessState, why: str) -> None:
        name = supervisor.spec.name
        if new is S.BACKOFF and supervisor.error is not None:
            # docs/reliability.md 2: a backend that dies while starting is reported at once, with its last log lines.
            ui.line(f"✗ {supervisor.error.message}", style="red")
        if new is S.READY:
            ui.line(f"✓ {name} is ready ({why}).", style="green")
        elif new in (S.BACKOFF, S.DEGRADED):
            ui.line(f"! {name} {new}: {why}", style="yellow")
        elif new is S.FATAL:
            ui.line(f"✗ {name} FATAL: {why}", style="red")
        elif new is S.STOPPED and old is S.STOPPING:
            ui.line(f"{name} stopped.")

    return on_state


def config_say(stack: Stack, ui: Progress) -> Callable[[str, str], None]:
    """How a config edit's outcome is told: the log and `status` always, the terminal unless it is Claude Code's."""

    def say(message: str, style: str) -> None:
        failed = style == "red"
        log.log(logging.WARNING if failed else logging.INFO, "%s", message)
        if style in ("green", "red"):  # an outcome, not a progress line
            stack.note_config_event(message, applied=not failed)
        ui.line(message, style=style)

    return say


@contextlib.asynccontextmanager
async def started_stack(
    settings: Settings, ui: Progress, cli_mode: str | None, stop_signals: Sequence[signal.Signals]
) -> AsyncIterator[Stack]:
    """The stack, started and ready (or raising the start error), watching its config; stopped on exit."""
    preflight(settings)  # what no restart can fix fails here, once, before anything starts
    settings.home.ensure()
    handler = setup_logging(settings.home, settings.config)

    def disk_trouble(message: str) -> None:
        log.warning("%s", message)
        ui.line(f"! {message}", style="yellow")

    TROUBLE.add_sink(disk_trouble)
    stack = Stack(settings, on_state=announce(ui))
    loop = asyncio.get_running_loop()
    signals = _Signals(stack, ui)
    signals.install(loop, stop_signals)
    try:
        await stack.start()  # binds the proxy first: a taken port fails here with nothing started
        for warning in exposure.warnings(settings, stack.backend.spec):
            log.warning("%s", warning)
            ui.line(f"! {warning}", style="yellow")
        watcher = start_watching(stack, cli_mode, config_say(stack, ui))
        try:
            error = await wait_started(stack.backend, ui)
            if error is not None:
                if isinstance(error, BackendFatalError):
                    # serve ends here, so `anyclaude restart` would find nothing to restart: say what works.
                    name = stack.backend.spec.name
                    error.hint = f"Fix the cause (`anyclaude logs {name}` shows it), then start anyclaude again."
                raise error
            record_applied(settings)
            yield stack
        finally:
            if watcher is not None:
                task, stop = watcher
                stop.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await stack.stop(immediate=stack.immediate)
        signals.uninstall(loop)
        teardown_logging(handler)
        TROUBLE.remove_sink(disk_trouble)


async def serve(settings: Settings, ui: Progress, cli_mode: str | None = None) -> int:
    """Run proxy and backend until a stop signal. Returns the exit code.

    Raises:
        AnyclaudeError: the proxy's port is taken, or the backend never became ready.
    """
    async with started_stack(settings, ui, cli_mode, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) as stack:
        print_endpoint(ui, stack.proxy_url, settings)
        await stack.run_until_stopped()
        return 0


def print_endpoint(ui: Progress, proxy_url: str, settings: Settings) -> None:
    key = "<your apiKey>" if settings.config.api_key else "local"
    ui.line(f"Serving the Anthropic API at {proxy_url}. Use it from another shell with:")
    ui.line(f"  export ANTHROPIC_BASE_URL={proxy_url} ANTHROPIC_API_KEY={key}")
    ui.line("  claude")
    ui.line(f"Dashboard: {proxy_url}/ui  (requests, usage, backend log, config rollback)")


async def run_with_claude(settings: Settings, ui: Progress, claude_args: Sequence[str], cli_mode: str | None) -> int:
    """Start (or reuse) the stack, run Claude Code in this terminal, return its exit code."""
    from launcher import claude

    env = dict(os.environ)
    path = claude.find_claude(env)
    if path is None:
        raise claude.not_installed_error()
    running = find_proxy(settings.home, settings.mode, settings.path)
    if running is not None:
        ui.line(f"Using the anyclaude already serving {settings.mode} at {running}.")
        return await _claude_session(settings, ui, path, claude_args, running)
    # Ctrl-C during start-up aborts it; while Claude Code runs, Ctrl-C is Claude Code's (run_claude ignores it).
    async with started_stack(settings, ui, cli_mode, (signal.SIGTERM, signal.SIGHUP)) as stack:
        return await _claude_session(settings, ui, path, claude_args, stack.proxy_url)


async def _claude_session(settings: Settings, ui: Progress, path: str, args: Sequence[str], proxy_url: str) -> int:
    from launcher import claude

    entry = settings.entry
    local = entry.type != "anthropic" and settings.mode != "claude"
    key = settings.config.api_key.get_secret_value() if settings.config.api_key else None
    from adapters.facts import model_facts, with_folder_facts

    facts = model_facts(with_folder_facts(entry))  # what the proxy and the server were given too
    target = claude.ClaudeTarget(
        proxy_url=proxy_url,
        api_key=key,
        local=local,
        # Claude Code shows the model that answers; with a model map the Claude ids route requests (claude.py).
        model=None if settings.config.models else facts.served_name,
        context_length=facts.context_length,
        max_output_tokens=facts.max_output_tokens,
    )
    env = claude.claude_env(os.environ, target)
    if local:
        args = [*fitted_args(settings, ui, args, facts), *args]
    headless = any(arg in ("-p", "--print") for arg in args)
    if local and not headless:
        claude.offer_onboarding(
            claude.claude_json_path(env),  # where Claude Code itself looks (CLAUDE_CONFIG_DIR or HOME)
            Path.cwd(),
            env.get("ANTHROPIC_API_KEY", ""),
            interactive=sys.stdin.isatty(),
            confirm=_confirm,
        )
    # From here the terminal is Claude Code's: anyclaude prints nothing until it exits (all goes to the log).
    with ui.silenced():
        if headless:  # the wait for an answer is shown on stderr, and a Ctrl-C exits 130 (launcher/waiting.py)
            from launcher import waiting

            return await waiting.run_headless(
                lambda on_sigint: claude.run_claude(path, args, env, on_sigint), sys.stderr
            )
        if local:  # the status line shows the wait for an answer, and the model otherwise (launcher/waiting.py)
            from launcher import waiting

            return await waiting.run_interactive(
                lambda full: claude.run_claude(path, full, env),
                args,
                env,
                settings.home.run,
                facts.served_name or "local model",
            )
        return await claude.run_claude(path, args, env)


def fitted_args(settings: Settings, ui: Progress, user_args: Sequence[str], facts: ModelFacts) -> tuple[str, ...]:
    """The arguments that fit Claude Code to the backend's model (tools, system prompt), said on the start line.

    A prompt file that cannot be read is an error naming the config key, before Claude Code starts."""
    from launcher.claude_fit import fit_claude

    entry = settings.entry
    try:
        fit = fit_claude(
            facts,
            tools=entry.claude.tools,
            system_prompt=entry.claude.system_prompt,
            exclude_dynamic_sections=entry.claude.exclude_dynamic_sections,
            tool_descriptions=entry.claude.tool_descriptions,
            user_args=user_args,
            cwd=Path.cwd(),
        )
    except OSError as exc:
        raise ConfigError(
            f"{settings.path}: backends.{settings.mode}.claude.systemPrompt: cannot read {exc.filename} "
            f"({exc.strerror}).",
            'Point it at a readable text file, or use "auto", "default" or "compact".',
        ) from exc
    if fit.summary:
        ui.line(fit.summary)
    return fit.args


def _confirm(question: str) -> bool:
    import click

    return bool(click.confirm(question, default=True))
