"""Rollback by config edit: watch the config file, apply each valid change, never break what runs.

- Invalid edits (bad JSON, failed validation, a half-written file) change nothing; the error names
  the field; the next valid edit is applied.
- A change that needs no restart (model map, proxy timeouts) is applied live.
- A backend change on a free port is blue/green: the new one starts, becomes ready, takes the
  traffic, and the old one stops. When the new one needs the old one's port (the old way of rolling
  back: edit one entry's serverScript), the old one stops first, requests wait, and if the new one
  fails its health check the old one is started again.
- A burst of writes leads to at most one swap: changes are debounced and only the latest is applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.base import LaunchSpec
from launcher import exposure
from launcher.config import Settings, load_settings, restart_keys_changed
from launcher.errors import AnyclaudeError
from launcher.history import record_applied
from launcher.preflight import preflight
from launcher.stack import Backend, Stack, build_backend, resolve_spec, wait_started
from launcher.supervision.states import ProcessState

log = logging.getLogger("anyclaude.reload")
# Editors save in bursts (write, rename, chmod); 300 ms of quiet means the file is done.
QUIET_MS = 300
# A file that never stops changing is still read this often (watchfiles groups changes at most this long).
MAX_BATCH_MS = 3_000

Say = Callable[[str, str], None]  # (message, style)


@dataclass(frozen=True)
class Outcome:
    applied: bool
    message: str


def _needs_new_backend(old: Settings, old_spec: LaunchSpec, new: Settings, new_spec: LaunchSpec) -> bool:
    """Another backend, another launch, or an edit of a key that applies by restart (`BACKEND_KEY_APPLIES`)."""
    changed = restart_keys_changed(old.config.backends.get(old.mode), new.config.backends.get(new.mode))
    return old.mode != new.mode or old_spec != new_spec or bool(changed)


async def apply_change(stack: Stack, new: Settings, say: Say) -> Outcome:
    """Apply a validated config to the running stack. Never leaves the stack without a backend."""
    old = stack.settings
    try:
        # Off the event loop: a kind's launch may probe its binary (`--version`, seconds at worst), and
        # this loop streams Claude Code's replies.
        new_spec = await asyncio.to_thread(resolve_spec, new)
    except AnyclaudeError as exc:
        return Outcome(False, f"Config not applied: {exc.message}")
    if (old.config.host, old.port) != (new.config.host, new.port):
        say("The proxy's host/port changed; restart anyclaude to move it (Claude Code keeps the old one).", "yellow")
    if (old.config.log_max_bytes, old.config.log_backups) != (new.config.log_max_bytes, new.config.log_backups):
        say("logMaxBytes/logBackups apply to logs opened from now on (the next backend start).", "yellow")
    before = set(exposure.warnings(old, stack.backend.spec))
    for warning in exposure.warnings(new, new_spec):
        if warning not in before and warning.startswith("backends."):  # the proxy itself does not move
            say(f"! {warning}", "yellow")
    restart = stack.backend.supervisor.state is ProcessState.FATAL  # a config edit clears FATAL
    if restart or _needs_new_backend(old, stack.backend.spec, new, new_spec):
        try:
            # A model path that does not exist is refused here, not retried through a backoff.
            await asyncio.to_thread(preflight, new)
        except AnyclaudeError as exc:
            return Outcome(False, f"Config not applied: {exc.message} {exc.hint or ''}".rstrip())
    if not _needs_new_backend(old, stack.backend.spec, new, new_spec):
        stack.adopt(new, new_spec)
        if restart:
            stack.backend.supervisor.request_restart()
            return Outcome(True, f"Config applied; restarting {new.mode}, which was FATAL.")
        return Outcome(True, "Config applied without a restart.")
    if new_spec.port is not None and new_spec.port == stack.backend.spec.port:
        return await _swap_in_place(stack, new, new_spec, say)
    return await _swap_blue_green(stack, new, new_spec, say)


async def _swap_blue_green(stack: Stack, new: Settings, spec: LaunchSpec, say: Say) -> Outcome:
    old = stack.backend
    fresh = build_backend(new, spec)
    say(f"Starting {fresh.spec.name} ({fresh.spec.kind}) next to {old.spec.name} …", "")
    await stack.launch(fresh)
    error = await wait_started(fresh, first_failure=True)
    if error is not None:
        await fresh.stop(immediate=True)
        old.supervisor.save_state()
        return Outcome(False, f"{fresh.spec.name} failed its start; {old.spec.name} keeps serving. {error.message}")
    stack.install(fresh, new)
    # Requests already running on the old backend finish there; it stops after the last one.
    running, _ = stack.retire(old)
    fresh.supervisor.save_state()
    if not running:
        return Outcome(True, f"Switched to {fresh.spec.name}; {old.spec.name} stopped.")
    return Outcome(
        True,
        f"Switched to {fresh.spec.name}; {old.spec.name} stops once its {running} running request(s) finish"
        f" (at most {stack.drain_timeout:.0f} s).",
    )


async def _swap_in_place(stack: Stack, new: Settings, spec: LaunchSpec, say: Say) -> Outcome:
    """The new backend needs the old one's port: drain and stop old, start new, start old again if new fails."""
    old, old_settings = stack.backend, stack.settings
    fresh = build_backend(new, spec)
    stack.install(fresh, new)  # new requests now wait for the new backend instead of failing
    running, retired = stack.retire(old)
    waiting = f" once its {running} running request(s) finish" if running else ""
    say(f"Stopping {old.spec.name}{waiting} to start the new {new.mode} on port {old.spec.port} …", "")
    await asyncio.shield(retired)  # shielded: cancelling the watcher must not leave the old one half-stopped
    await stack.launch(fresh)
    # The first failed start rolls back: the old backend, not the new one's backoff, is what should serve.
    error = await wait_started(fresh, first_failure=True)
    if error is None:
        return Outcome(True, f"Switched to {fresh.spec.name}.")
    await fresh.stop(immediate=True)
    revived = build_backend(old_settings, old.spec)
    stack.install(revived, old_settings)
    await stack.launch(revived)
    back = await wait_started(revived)
    state = "is serving again" if back is None else f"did not come back either: {back.message}"
    return Outcome(False, f"The new {new.mode} failed ({error.message}); rolled back: {old.spec.name} {state}.")


async def watch_config(stack: Stack, path: Path, mode: str | None, say: Say, stop: asyncio.Event) -> None:
    """Apply edits of `path` to `stack` until `stop` is set."""
    from watchfiles import awatch

    target = path.resolve()

    def is_config(_: object, changed: str) -> bool:
        return Path(changed).resolve() == target

    # watchfiles yields a batch after `step` ms without a change (not after `debounce`, its upper bound):
    # the quiet period must be `step`, or writes 50 ms apart are read as separate edits.
    batches = awatch(target.parent, watch_filter=is_config, debounce=MAX_BATCH_MS, step=QUIET_MS, stop_event=stop)
    async for _ in batches:
        try:
            await _apply_latest(stack, path, mode, say)
        except Exception:  # nothing one edit does may end the watcher: every later edit must still apply
            log.exception("handling a config edit failed")


async def _apply_latest(stack: Stack, path: Path, mode: str | None, say: Say) -> None:
    # Only the file's latest content matters: a burst of writes is one change.
    try:
        new = load_settings(path, mode)
    except AnyclaudeError as exc:
        say(f"Config edit not applied: {exc.message}", "red")
        return
    if new.config == stack.settings.config and new.mode == stack.settings.mode:
        return
    try:
        outcome = await apply_change(stack, new, say)
    except Exception as exc:  # a bug here must not end the watcher, nor the serve around it
        log.exception("applying the config edit failed")
        outcome = Outcome(False, f"Config edit not applied: {type(exc).__name__}: {exc} (see the anyclaude log)")
    say(outcome.message, "green" if outcome.applied else "red")
    if outcome.applied:
        record_applied(new)  # a full disk is reported there, never raised


def start_watching(stack: Stack, mode: str | None, say: Say) -> tuple[asyncio.Task[None], asyncio.Event] | None:
    """Watch the stack's config file in the background (nothing to watch for the built-in default)."""
    if stack.settings.path is None:
        return None
    stop = asyncio.Event()
    task = asyncio.create_task(watch_config(stack, stack.settings.path, mode, say, stop), name="config-watcher")
    return task, stop


__all__ = ["Backend", "Outcome", "apply_change", "start_watching", "watch_config"]
