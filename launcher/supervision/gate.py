"""The proxy's view of the supervised backend: wait while it starts, refuse fast while it fails.

- STARTING / BACKOFF / STOPPED: a request waits (up to the start timeout) for READY, then gets 529.
- FATAL: 529 at once, with the reason.
- READY / DEGRADED: the circuit breaker decides; while it is open the backend is not touched.
A config reload swaps the (supervisor, upstream) pair with `switch`; requests already running keep
the upstream they were given.
"""

from __future__ import annotations

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

    def switch(self, supervisor: Supervisor, upstream: Upstream, wait_timeout: float) -> None:
        """Send new requests to another backend (a config reload); running ones finish where they are."""
        self.supervisor, self.upstream, self.wait_timeout = supervisor, upstream, wait_timeout

    async def acquire(self) -> Upstream:
        supervisor, upstream = self.supervisor, self.upstream
        if supervisor.state not in SERVING:
            await supervisor.wait_for(SERVING | {ProcessState.FATAL}, timeout=self.wait_timeout)
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

    def report(self, ok: bool) -> None:
        breaker = self.supervisor.breaker
        # While half-open only the probe was let through, so the report in that state is the probe's.
        breaker.record(ok, Permit(probe=breaker.state is BreakerState.HALF_OPEN))

    def snapshot(self) -> dict[str, Any]:
        return {
            "backend": self.upstream.name,
            "state": str(self.supervisor.state),
            "reason": self.supervisor.reason,
            "breaker": self.supervisor.breaker.snapshot(),
        }
