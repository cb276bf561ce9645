"""The proxy's view of the supervised backend: wait while it starts, refuse fast while it fails.

- STARTING / BACKOFF / STOPPED: a request waits (up to the start timeout) for READY, then gets 529.
- FATAL: 529 at once, with the reason.
- READY / DEGRADED: the circuit breaker decides; while it is open the backend is not touched.
A config reload swaps the (supervisor, upstream) pair with `switch`: new requests go to the new
backend at once, requests already running keep the upstream they were given, and each outcome is
charged to the breaker of the backend that served it. A request waiting when the backend is swapped
follows the swap; one waiting when the stack stops gets an error naming why (`close`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.base import ApiKind, LaunchSpec
from launcher.config import BackendConfig
from launcher.errors import CircuitOpenError
from launcher.proxy import BackendUnavailable, Upstream
from launcher.supervision.breaker import BreakerState, Permit
from launcher.supervision.states import SERVING, ProcessState
from launcher.supervision.supervisor import Supervisor

# Seconds a client is told to wait when the backend is down for good or still starting.
RETRY_FATAL = 30.0
RETRY_STARTING = 5.0
# A stopping anyclaude is usually started again by its user within seconds.
RETRY_STOPPING = 5.0


def upstream_for(spec: LaunchSpec, entry: BackendConfig, transport: Any = None) -> Upstream:
    """How the proxy reaches the backend described by `spec`."""
    return Upstream(
        name=spec.name,
        base_url=spec.base_url,
        api=spec.api,
        api_key=entry.api_key.get_secret_value() if entry.api_key else None,
        model=spec.model_name,
        context_length=spec.context_length,
        max_output_tokens=entry.max_output_tokens,
        tokenize_url=spec.tokenize_url,
        # The real Anthropic API gets the client's request untouched; a local Anthropic-speaking
        # server (llama-server) gets the cache hygiene and model mapping.
        passthrough=spec.kind == "anthropic" and spec.api is ApiKind.ANTHROPIC,
        transport=transport,
        accepts_images=spec.accepts_images,
    )


class SupervisorGate:
    def __init__(self, supervisor: Supervisor, upstream: Upstream, wait_timeout: float) -> None:
        self.supervisor = supervisor
        self.upstream = upstream
        self.wait_timeout = wait_timeout
        # Who served each upstream still in use, by identity: an in-place swap may build an upstream
        # equal to the old one, and the old one's requests must still be charged to the old breaker.
        self._served_by: dict[int, tuple[Upstream, Supervisor]] = {id(upstream): (upstream, supervisor)}
        self._changed = asyncio.Event()
        self._closed: str | None = None
        self.waiting = 0

    def switch(self, supervisor: Supervisor, upstream: Upstream, wait_timeout: float) -> None:
        """Send new requests to another backend (a config reload); running ones finish where they are."""
        self.supervisor, self.upstream, self.wait_timeout = supervisor, upstream, wait_timeout
        self._served_by[id(upstream)] = (upstream, supervisor)
        self._wake()

    def forget(self, upstream: Upstream) -> None:
        """The backend behind `upstream` has stopped; no request can report on it any more."""
        if upstream is not self.upstream:
            self._served_by.pop(id(upstream), None)

    def close(self, reason: str) -> None:
        """Refuse new requests and end every wait with `reason` (the stack is stopping)."""
        self._closed = reason
        self._wake()

    async def acquire(self) -> Upstream:
        self._check_open()
        deadline = asyncio.get_running_loop().time() + self.wait_timeout
        self.waiting += 1
        try:
            while True:
                supervisor = self.supervisor
                if supervisor.state in SERVING or supervisor.state is ProcessState.FATAL:
                    break
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                await self._wait_change(supervisor, remaining)
                self._check_open()
        finally:
            self.waiting -= 1
        supervisor, upstream = self.supervisor, self.upstream
        state = supervisor.state
        if state is ProcessState.FATAL:
            raise BackendUnavailable(
                f"The backend '{upstream.name}' has failed and was given up on: {supervisor.reason}. "
                f"Fix it, then run `anyclaude restart {upstream.name}` or edit the config.",
                retry_after=RETRY_FATAL,
            )
        if state not in SERVING:
            raise BackendUnavailable(
                f"The backend '{upstream.name}' is not ready after {self.wait_timeout:.0f} s ({state}).",
                retry_after=RETRY_STARTING,
            )
        try:
            supervisor.breaker.allow()
        except CircuitOpenError as exc:
            raise BackendUnavailable(exc.message, retry_after=exc.retry_after) from None
        return upstream

    def report(self, ok: bool, upstream: Upstream | None = None) -> None:
        served = self._served_by.get(id(upstream)) if upstream is not None else None
        breaker = (served[1] if served is not None else self.supervisor).breaker
        # While half-open only the probe was let through, so the report in that state is the probe's.
        breaker.record(ok, Permit(probe=breaker.state is BreakerState.HALF_OPEN))

    def snapshot(self) -> dict[str, Any]:
        return {
            "backend": self.upstream.name,
            "state": str(self.supervisor.state),
            "reason": self.supervisor.reason,
            "breaker": self.supervisor.breaker.snapshot(),
            "waiting": self.waiting,
        }

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        if self._closed is not None:
            raise BackendUnavailable(
                f"anyclaude is stopping ({self._closed}); the request was not sent to the backend.",
                retry_after=RETRY_STOPPING,
                status=503,
            )

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, supervisor: Supervisor, timeout: float) -> None:
        """Until the supervisor changes state, the gate switches or closes, or `timeout` passes."""
        waits = [asyncio.ensure_future(supervisor.changed.wait()), asyncio.ensure_future(self._changed.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
