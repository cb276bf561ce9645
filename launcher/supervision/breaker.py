"""Circuit breaker: stop sending work to a backend that keeps failing, and let one probe test it.

CLOSED: calls go through; `failure_threshold` consecutive failed calls open the circuit, and so do
`failure_threshold` consecutive failed liveness probes. The two are counted apart: a health endpoint
that answers while every completion fails must not wipe out the requests' evidence (nor a request
that succeeds the probes'), and only a call's success closes an open circuit.
OPEN: calls are refused at once (CircuitOpenError with retry_after) for `reset_timeout` seconds.
HALF_OPEN: exactly one call (the probe) goes through; its success closes, its failure re-opens.

No lock is held across a call: `allow()` and `record()` are short and run on one event loop,
so concurrent streams are never serialised by the breaker. Client errors (4xx) must not be
recorded as failures; the caller decides what counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from launcher.errors import CircuitOpenError
from launcher.supervision.clock import Clock, MonotonicClock


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class Permit:
    """Handed out by `allow()`; `probe` is True for the single half-open trial call."""

    probe: bool = False


Listener = Callable[[BreakerState, BreakerState, str], None]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Clock | None = None,
        name: str = "backend",
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock or MonotonicClock()
        self.name = name
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive failed calls
        self.probe_failures = 0  # consecutive failed liveness probes
        self.opened_at = 0.0
        self._probe_out = False
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def retry_after(self) -> float:
        """Seconds until a call may be tried again (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self.opened_at + self.reset_timeout - self.clock.now())

    def allow(self) -> Permit:
        """Ask to make one call. Raises CircuitOpenError when the call must not touch the backend."""
        if self.state is BreakerState.CLOSED:
            return Permit()
        if self.state is BreakerState.OPEN and self.clock.now() >= self.opened_at + self.reset_timeout:
            self._set(BreakerState.HALF_OPEN, "reset timeout elapsed; letting one probe through")
        if self.state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return Permit(probe=True)
        wait = max(self.retry_after(), 1.0)
        raise CircuitOpenError(
            f"The {self.name} backend is failing; the circuit breaker is open.",
            retry_after=wait,
            hint=f"Retry in {wait:.0f} s; `anyclaude logs` shows why the backend fails.",
        )

    def record(self, ok: bool, permit: Permit | None = None) -> None:
        """Record the outcome of one call (a request to the backend)."""
        probe = permit is not None and permit.probe
        if probe:
            self._probe_out = False
        if ok:
            self.failures = 0
            # Only the trial closes: a call let through before the breaker opened may end well meanwhile.
            if self.state is not BreakerState.CLOSED and probe:
                self._set(BreakerState.CLOSED, "probe succeeded")
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN and (probe or not self._probe_out):
            self._open("probe failed")
        elif self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold:
            self._open(f"{self.failures} consecutive failures")

    def record_probe(self, ok: bool) -> None:
        """Record one liveness probe. Its success clears only the probes' own count and closes nothing."""
        if ok:
            self.probe_failures = 0
            return
        self.probe_failures += 1
        if self.state is BreakerState.HALF_OPEN and not self._probe_out:
            self._open("liveness probe failed")
        elif self.state is BreakerState.CLOSED and self.probe_failures >= self.failure_threshold:
            self._open(f"{self.probe_failures} consecutive failed liveness probes")

    def reset(self, reason: str = "reset") -> None:
        """Close the circuit, e.g. when a fresh backend process has become ready."""
        self.failures = 0
        self.probe_failures = 0
        self._probe_out = False
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED, reason)

    def snapshot(self) -> dict[str, object]:
        return {
            "state": str(self.state),
            "failures": self.failures,
            "probe_failures": self.probe_failures,
            "retry_after": round(self.retry_after(), 3),
        }

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock.now()
        self._set(BreakerState.OPEN, reason)

    def _set(self, new: BreakerState, reason: str) -> None:
        old, self.state = self.state, new
        if old is not new:
            for listener in self._listeners:
                listener(old, new, reason)
