"""The supervisor: one asyncio task that owns one backend's process and state.

Everyone else sends commands (`request_stop`, `request_restart`) and reads snapshots; only the
owner task changes `state`, through `_set_state`, which checks the transition table, logs
`old -> new (reason)`, writes the state file and notifies listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

import httpx

from adapters.base import LaunchSpec
from launcher.diskfull import TROUBLE
from launcher.errors import AnyclaudeError, BackendFatalError, BackendStartError, PortInUseError
from launcher.paths import Home, write_private
from launcher.supervision import statefile
from launcher.supervision.backoff import Backoff
from launcher.supervision.breaker import CircuitBreaker
from launcher.supervision.childlog import BackendLog, Pump
from launcher.supervision.clock import Clock, MonotonicClock
from launcher.supervision.health import probe
from launcher.supervision.ports import port_holder
from launcher.supervision.procs import leftovers, spawn, stop_processes, terminate_group, tree_of
from launcher.supervision.states import SERVING, ProcessState, can_transition

log = logging.getLogger("anyclaude.supervisor")

S = ProcessState
# Readiness is polled this often, so READY is seen within ~50 ms of the backend answering.
READY_POLL = 0.05
# Once a liveness probe failed, the next ones come this soon (not a whole healthInterval later): a hung
# backend is then found within healthTimeout x healthFailures plus a second or two, not 30 s.
DEGRADED_PROBE_INTERVAL = 1.0
# While a backend starts (a model loading for minutes), its tree is looked at this often (a /proc scan).
TREE_LOOK_INTERVAL = 1.0
READY_PROBE_TIMEOUT = 2.0
START_FAILURE_LINES = 20

Listener = Callable[[ProcessState, ProcessState, str], None]


@dataclass(frozen=True)
class Timings:
    """Durations (seconds) the supervisor works with; from the backend entry's millisecond keys."""

    startup_timeout: float = 120.0
    stop_timeout: float = 10.0
    health_interval: float = 5.0
    health_timeout: float = 5.0
    health_failures: int = 3


class _Outcome(Enum):
    FAILED = auto()
    STOP = auto()
    RESTART = auto()


class Supervisor:
    """Starts, watches, restarts and stops one backend described by a LaunchSpec."""

    def __init__(
        self,
        spec: LaunchSpec,
        home: Home,
        *,
        timings: Timings | None = None,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Clock | None = None,
        spawn_process: bool = True,
        parent_death_signal: bool = True,
        log_max_bytes: int = 10 * 1024 * 1024,
        log_backups: int = 5,
        config_path: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        tools: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.home = home
        self.timings = timings or Timings()
        self.backoff = backoff or Backoff()
        self.clock = clock or MonotonicClock()
        self.breaker = breaker or CircuitBreaker(clock=self.clock, name=spec.name)
        self.spawn_process = spawn_process and spec.spawns
        self.parent_death_signal = parent_death_signal
        self.transport = transport  # probes of an embedded backend go through it, not the network
        self.state = S.STOPPED
        self.reason = ""
        self.error: AnyclaudeError | None = None
        self.restarts = 0
        self.log = BackendLog(home.logs / f"{spec.name}.log", log_max_bytes, log_backups, spec.secrets)
        self._listeners: list[Listener] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: Pump | None = None
        self._stop = asyncio.Event()
        self._restart = asyncio.Event()
        self._immediate = False
        self._changed = asyncio.Event()  # set and replaced on every transition
        self._inherited: statefile.BackendRecord | None = None
        # The watchdog's descendants as last seen (pid -> create time): what is stopped if it dies on its own.
        self._tree: dict[int, float] = {}
        self._tree_seen_at = 0.0
        # The state file is written here and, after a failed write, by the disk retry thread.
        self._write_lock = threading.Lock()
        self._saves = 0
        self._removed = False
        self._record = statefile.BackendRecord(
            name=spec.name,
            kind=spec.kind,
            state=str(self.state),
            port=spec.port,
            base_url=spec.base_url,
            launcher_create_time=statefile.process_create_time(os.getpid()),
            launcher_argv_hash=statefile.process_argv_hash(os.getpid()),
            config_path=config_path,
            log_path=str(self.log.path),
            tools=tools or {},
        )
        self.breaker.add_listener(lambda old, new, why: self._save())

    # ------------------------------------------------------------------ commands and snapshots

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def proxy_url(self) -> str | None:
        return self._record.proxy_url

    @proxy_url.setter
    def proxy_url(self, url: str | None) -> None:
        """The proxy in front of this backend, for `status` and for a second `anyclaude` to find it."""
        self._record.proxy_url = url
        self._save()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def request_stop(self, immediate: bool = False) -> None:
        """Ask the owner task to stop the backend (orderly; `immediate` skips the SIGTERM grace)."""
        self._immediate = self._immediate or immediate
        self._stop.set()

    def request_restart(self) -> None:
        """Ask for a fresh start now: stops a running backend, skips any backoff, clears FATAL."""
        self._restart.set()

    async def wait_for(self, states: frozenset[ProcessState] | set[ProcessState], timeout: float | None = None) -> bool:
        """Wait until the state is one of `states`; False on timeout."""

        deadline = None if timeout is None else self.clock.now() + timeout
        while self.state not in states:
            changed = self._changed
            remaining = None if deadline is None else deadline - self.clock.now()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True

    @property
    def changed(self) -> asyncio.Event:
        """An event set at the next state change (a fresh one after each)."""
        return self._changed

    def save_state(self, config_events: list[dict[str, Any]] | None = None) -> None:
        """Write the state file now (after a swap, so `status` shows the backend that serves), with the
        launcher's latest config edits when given."""
        if config_events is not None:
            self._record.config_events = config_events
        self._save()

    def snapshot(self) -> dict[str, object]:
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "state": str(self.state),
            "reason": self.reason,
            "pid": self.pid,
            "restarts": self.restarts,
            "breaker": self.breaker.snapshot(),
        }

    # ------------------------------------------------------------------ the owner task

    async def run(self) -> None:
        """Run until stopped. Restarts after crashes with backoff; parks in FATAL until told to restart."""
        # Read before our first state change overwrites it: it may name a backend an earlier run left behind.
        self._inherited = statefile.read_record(self.home, self.spec.name)
        try:
            while not self._stop.is_set():
                self._restart.clear()
                outcome = await self._run_once()
                if outcome is _Outcome.STOP or self._stop.is_set():
                    break
                if outcome is _Outcome.RESTART:
                    self.backoff.reset()
                    continue
                delay = self.backoff.failure(self.clock.now())
                if delay is None:
                    self._give_up()
                    if not await self._wait_command():
                        break
                    self.backoff.reset()
                    continue
                self._set_state(S.BACKOFF, f"{self.reason}; next start in {delay:.1f} s")
                if await self._pause(delay) and self._stop.is_set():
                    break
                self.restarts += 1
        finally:
            await self._shutdown()

    async def _run_once(self) -> _Outcome:
        self.error = None
        self._set_state(S.STARTING, "starting" if not self.restarts else f"restart #{self.restarts}")
        if self.spawn_process:
            try:
                await self._prepare_port()
                await self._spawn()
            except (PortInUseError, BackendStartError) as exc:
                # Neither a foreign port holder nor an unrunnable command goes away by retrying.
                self.error = exc
                self._set_state(S.FATAL, exc.message)
                return await self._park_fatal()
        outcome = await self._wait_ready()
        if outcome is not None:
            return outcome
        return await self._monitor()

    async def _park_fatal(self) -> _Outcome:
        if not await self._wait_command():
            return _Outcome.STOP
        return _Outcome.RESTART  # FATAL -> STARTING is allowed; nothing runs, so nothing to stop

    # ------------------------------------------------------------------ starting

    async def _prepare_port(self) -> None:
        """Stop our own stale backend from an earlier run; refuse a port held by anyone else."""
        record, self._inherited = self._inherited, None
        if record and record.launcher_pid != os.getpid():
            if statefile.launcher_alive(record) and statefile.backend_alive(record):
                raise PortInUseError(
                    f"Backend '{self.spec.name}' is already running under anyclaude pid {record.launcher_pid}.",
                    hint=f"Use that one, or stop it first: anyclaude stop {self.spec.name}",
                )
            if statefile.backend_alive(record) and record.pid is not None:
                log.warning("stopping stale backend %s (pid %s) left by an earlier run", self.spec.name, record.pid)
                self.log.note(f"stopping stale pid {record.pid} left by an earlier run")
                await terminate_group(record.pid, self.timings.stop_timeout, self.clock, watchdog=record.watchdog)
        if self.spec.port is None:
            return
        holder = port_holder(self.spec.host, self.spec.port)
        if holder is not None:
            raise PortInUseError(
                f"Port {self.spec.port} is in use by {holder.describe()}.",
                hint=f"Stop it or set backends.{self.spec.name}.port to a free port.",
            )

    async def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **self.spec.env}
        try:
            self._proc, command = await spawn(
                self.spec.argv, env, self.spec.cwd, write_fd, self.parent_death_signal, self.timings.stop_timeout
            )
        except OSError as exc:
            os.close(read_fd)
            raise BackendStartError(
                f"Cannot run backend '{self.spec.name}': {exc.strerror or exc} ({self.spec.argv[0]}).",
                hint="Check the command, serverScript or binary in the config (anyclaude serve --dry-run shows it).",
            ) from None
        finally:
            os.close(write_fd)
        self.log.banner(self._proc.pid, self.spec.argv)
        self._pump = Pump(read_fd, self.log)
        self._pump.start()
        self._record.pid = self._proc.pid
        # The watchdog's command line is what runs under this pid: ownership is proved against it.
        self._record.argv_hash = statefile.argv_hash(command)
        self._record.watchdog = True
        self._record.create_time = statefile.process_create_time(self._proc.pid)
        self._record.started_at = self.clock.now()
        self._tree, self._record.tree = {}, []
        self._save()

    async def _wait_ready(self) -> _Outcome | None:
        """Poll readiness until it answers, the process exits, the start times out, or a command comes."""
        deadline = self.clock.now() + self.timings.startup_timeout
        if self.spec.readiness is None:
            self._became_ready("no readiness probe for this kind")
            return None
        async with httpx.AsyncClient(timeout=READY_PROBE_TIMEOUT, transport=self.transport, trust_env=False) as client:
            while True:
                if self._exited():
                    await self._stop_leftovers()
                    return await self._failed_start(f"exited with code {self._returncode()} while starting")
                if self._stop.is_set():
                    return _Outcome.STOP
                if self._restart.is_set():
                    return await self._stop_for_restart()
                result = await probe(client, self.spec.readiness)
                if result.ok:
                    self._became_ready(f"answered {result.detail} after {self._uptime():.2f} s")
                    return None
                if self.clock.now() - self._tree_seen_at >= TREE_LOOK_INTERVAL:
                    await self._look_at_tree()
                if self.clock.now() >= deadline:
                    await self._kill("startup timeout")
                    return await self._failed_start(
                        f"not ready after {self.timings.startup_timeout:.0f} s (last probe: {result.detail})"
                    )
                await self._pause(READY_POLL, wake_on_exit=True)

    def _became_ready(self, reason: str) -> None:
        self.backoff.started(self.clock.now())
        self.breaker.reset("backend (re)started")
        self._set_state(S.READY, reason)

    async def _failed_start(self, what: str) -> _Outcome:
        await self._reap_pump()
        tail = self.log.last_lines(START_FAILURE_LINES)
        shown = "\n".join(f"    {line}" for line in tail) if tail else "    (no output)"
        self.reason = f"{self.spec.name} {what}"
        self.error = BackendStartError(
            f"Backend '{self.spec.name}' {what}. Last lines of {self.log.path}:\n{shown}",
            hint=f"See the whole log: anyclaude logs {self.spec.name}",
        )
        log.error("%s", self.error.message)
        return _Outcome.FAILED

    # ------------------------------------------------------------------ running

    async def _monitor(self) -> _Outcome:
        misses = 0
        liveness = self.spec.liveness
        client = httpx.AsyncClient(timeout=self.timings.health_timeout, transport=self.transport, trust_env=False)
        async with client:
            await self._look_at_tree()
            while True:
                interval = self.timings.health_interval
                if misses:
                    interval = min(interval, DEGRADED_PROBE_INTERVAL)
                woke = await self._pause(interval, wake_on_exit=True)
                if self._stop.is_set():
                    return _Outcome.STOP
                if self._restart.is_set():
                    return await self._stop_for_restart()
                if self._exited():
                    code = self._returncode()
                    self.log.note(f"exited with code {code}")
                    await self._reap_pump()
                    await self._stop_leftovers()
                    self.reason = f"{self.spec.name} exited with code {code}"
                    return _Outcome.FAILED
                await self._look_at_tree()
                if woke or liveness is None:
                    continue
                result = await probe(client, liveness)
                self.breaker.record_probe(result.ok)
                if result.ok:
                    misses = 0
                    if self.state is S.DEGRADED:
                        self._set_state(S.READY, "liveness probe answered again")
                    continue
                misses += 1
                if misses < self.timings.health_failures or not self.spawn_process:
                    if self.state is not S.DEGRADED:
                        self._set_state(S.DEGRADED, f"liveness probe failed: {result.detail}")
                    continue
                # A hung process cannot act on SIGTERM; waiting stopTimeout for it only lengthens the outage.
                await self._kill(f"{misses} liveness probes failed", force=True)
                self.reason = f"{self.spec.name} stopped answering ({misses} probes failed: {result.detail})"
                return _Outcome.FAILED

    # ------------------------------------------------------------------ stopping

    async def _kill(self, why: str, force: bool = False) -> None:
        """Stop the backend's tree; `force` sends SIGKILL at once (a hung process cannot act on SIGTERM)."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self.log.note(f"stopping: {why}" + (" (SIGKILL)" if force else ""))
            timeout = 0.0 if self._immediate else self.timings.stop_timeout
            killed = await terminate_group(
                self._proc.pid,
                timeout,
                self.clock,
                reap=self._exited,
                hurry=lambda: self._immediate,
                watchdog=True,
                force=force,
            )
            if killed and not (self._immediate or force):
                self.log.note(f"did not stop within {timeout:.0f} s of SIGTERM; sent SIGKILL")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 5.0)
        await self._reap_pump()
        await self._stop_leftovers()

    async def _look_at_tree(self) -> None:
        """Note the watchdog's descendants while it lives (a dead watchdog has none: the last look stays)."""
        if self._proc is None or self._exited():
            return
        # Non-empty only while the watchdog lived: at its death its children go to init at once.
        self._tree_seen_at = self.clock.now()
        seen = await asyncio.to_thread(tree_of, self._proc.pid)
        if seen and seen != self._tree:
            self._tree = seen
            self._record.tree = sorted([pid, created] for pid, created in seen.items())
            self._save()

    async def _stop_leftovers(self) -> None:
        """Stop what a watchdog that died on its own (SIGKILL, the OOM killer) left running.

        A watchdog stops its whole tree before it exits; killed, it cannot: the backend's direct child
        dies with it (parent-death signal), but what that child started lives on, re-parented to init,
        holding the port and memory, and no later stop would ever reach it. Only processes proven ours
        (pid + create time, or the watchdog's own session while a proven member holds it) are signalled.
        """
        tree, self._tree = self._tree, {}
        session, since = self._record.pid, self._record.create_time
        if not tree or session is None or since is None:
            return
        found = await asyncio.to_thread(leftovers, session, since, tree)
        if not found:
            return
        pids = ", ".join(str(p.pid) for p in found)
        log.warning(
            "%s: its watchdog is gone; stopping %d processes it left running (pids %s)",
            self.spec.name,
            len(found),
            pids,
        )
        self.log.note(f"the watchdog is gone; stopping what it left running: pids {pids}")
        grace = 0.0 if self._immediate else self.timings.stop_timeout
        await asyncio.to_thread(stop_processes, found, grace)

    async def _stop_for_restart(self) -> _Outcome:
        self._set_state(S.STOPPING, "restart requested")
        await self._kill("restart requested")
        self._set_state(S.STOPPED, "stopped for restart")
        return _Outcome.RESTART

    async def _reap_pump(self) -> None:
        if self._pump is not None:
            pump, self._pump = self._pump, None
            await asyncio.to_thread(pump.stop, 1.0)

    async def _shutdown(self) -> None:
        if self.state is not S.STOPPED:
            self._set_state(S.STOPPING, "stop requested" if self._stop.is_set() else "supervisor ending")
        try:
            await asyncio.shield(self._kill("stop requested"))
        finally:
            self._proc = None
            self._set_state(S.STOPPED, "stopped")
            # Two supervisors of one name overlap during a blue/green swap: remove only our own record.
            current = statefile.read_record(self.home, self.spec.name)
            if current is None or current.started_at == self._record.started_at:
                with self._write_lock:
                    self._removed = True  # a pending retry must not bring the file back
                    statefile.remove_record(self.home, self.spec.name)
                TROUBLE.drop(f"the state file of {self.spec.name}")
            self.log.close()

    def _give_up(self) -> None:
        failures = self.backoff.failures
        last = self.error.message if self.error else self.reason
        self.error = BackendFatalError(
            f"Backend '{self.spec.name}' failed {failures} times in a row; giving up (FATAL). Last failure: {last}",
            hint=f"Fix the cause (anyclaude logs {self.spec.name}), then `anyclaude restart {self.spec.name}`"
            " or edit the config.",
        )
        self._set_state(S.FATAL, f"gave up after {failures} failed starts: {self.reason}")

    # ------------------------------------------------------------------ helpers

    def _exited(self) -> bool:
        return self._proc is not None and self._proc.returncode is not None

    def _returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def _uptime(self) -> float:
        started = self._record.started_at
        return self.clock.now() - started if started is not None else 0.0

    async def _pause(self, seconds: float, wake_on_exit: bool = False) -> bool:
        """Sleep up to `seconds`; wake early on a command (or process exit). True if woken early."""
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._restart.wait()),
        ]
        if wake_on_exit and self._proc is not None and self._proc.returncode is None:
            waiters.append(asyncio.ensure_future(self._proc.wait()))
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            done, _ = await asyncio.wait([sleeper, *waiters], return_when=asyncio.FIRST_COMPLETED)
            return sleeper not in done
        finally:
            for task in (sleeper, *waiters):
                task.cancel()

    async def _wait_command(self) -> bool:
        """In FATAL: wait for restart (True) or stop (False)."""
        while not (self._stop.is_set() or self._restart.is_set()):
            await self._pause(3600)
        return not self._stop.is_set()

    def _set_state(self, new: ProcessState, reason: str) -> None:
        old = self.state
        if old is new:
            self.reason = reason
            self._save()
            return
        if not can_transition(old, new):
            raise RuntimeError(f"supervisor bug: {old} -> {new} is not an allowed transition ({reason})")
        self.state, self.reason = new, reason
        level = logging.WARNING if new in (S.FATAL, S.DEGRADED, S.BACKOFF) else logging.INFO
        log.log(level, "%s: %s -> %s (%s)", self.spec.name, old, new, reason)
        self._save()
        for listener in self._listeners:
            listener(old, new, reason)
        self._changed.set()
        self._changed = asyncio.Event()

    def _save(self) -> None:
        if self.state is S.STOPPED and self._proc is None:
            return
        self._record.state = str(self.state)
        self._record.reason = self.reason
        self._record.restarts = self.restarts
        self._record.breaker = self.breaker.snapshot()
        what = f"the state file of {self.spec.name}"
        self._record.updated_at = time.time()
        text, path = self._record.to_json(), statefile.record_path(self.home, self.spec.name)
        with self._write_lock:
            self._saves += 1
            generation, self._removed = self._saves, False
            try:
                write_private(path, text)
            except OSError as exc:  # a full disk must not take the supervisor down, nor flood the log
                failed = exc
            else:
                TROUBLE.ok(what)
                return

        def retry() -> None:
            # Called from the retry thread: a newer save (written, or failed with its own retry) wins.
            with self._write_lock:
                if generation == self._saves and not self._removed:
                    write_private(path, text)

        TROUBLE.failed(what, path, failed, retry)

    @property
    def serving(self) -> bool:
        return self.state in SERVING
