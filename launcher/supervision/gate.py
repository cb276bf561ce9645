"""The proxy's view of the supervised backend: wait while it starts, refuse fast while it fails.

- STARTING / BACKOFF / STOPPED: a request waits (up to the start timeout) for READY, then gets 529.
- FATAL: 529 at once, with the reason.
- READY / DEGRADED: the circuit breaker decides; while it is open the backend is not touched.
A config reload swaps the (supervisor, upstream) pair with `switch`: new requests go to the new
backend at once, requests already running keep the upstream they were given, and each outcome is
charged to the breaker of the backend that served it, with the permit it was given (the `Lease`). A
request waiting when the backend is swapped follows the swap; one waiting when the stack stops gets an
error naming why (`close`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.base import ApiKind, LaunchSpec
from launcher.bridge.upstream import BackendUnavailable, Lease, LeaseCounter, Upstream
from launcher.config import BackendConfig
from launcher.errors import CircuitOpenError
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
        max_output_tokens=spec.facts.max_output_tokens,
        tokenize_url=spec.tokenize_url,
        tokenizer_folder=spec.tokenizer_folder,
        # The real Anthropic API gets the client's request untouched; a local Anthropic-speaking
        # server (llama-server) gets the cache hygiene and model mapping.
        passthrough=spec.kind == "anthropic" and spec.api is ApiKind.ANTHROPIC,
        transport=transport,
        accepts_images=spec.accepts_images,
        short_tool_descriptions=entry.claude.tool_descriptions == "short"
        or (entry.claude.tool_descriptions == "auto" and spec.facts.small),
    )


class SupervisorGate:
    def __init__(self, supervisor: Supervisor, upstream: Upstream, wait_timeout: float) -> None:
        self.supervisor = supervisor
        self.upstream = upstream
        self.wait_timeout = wait_timeout
        self._leases = LeaseCounter()
        self._changed = asyncio.Event()
        self._closed: str | None = None
        self.waiting = 0

    def switch(self, supervisor: Supervisor, upstream: Upstream, wait_timeout: float) -> None:
        """Send new requests to another backend (a config reload); running ones finish where they are."""
        self.supervisor, self.upstream, self.wait_timeout = supervisor, upstream, wait_timeout
        self._wake()

    def close(self, reason: str) -> None:
        """Refuse new requests and end every wait with `reason` (the stack is stopping)."""
        self._closed = reason
        self._wake()

    async def acquire(self) -> Lease:
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
        breaker = supervisor.breaker
        try:
            permit = breaker.allow()
        except CircuitOpenError as exc:
            raise BackendUnavailable(exc.message, retry_after=exc.retry_after) from None
        # The outcome goes to this breaker with this permit, whatever serves new requests by then.
        return self._leases.lease(upstream, lambda ok: breaker.record(ok, permit))

    def in_flight(self, upstream: Upstream) -> int:
        return self._leases.count(upstream)

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
