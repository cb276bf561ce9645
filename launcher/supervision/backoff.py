"""Restart delays: geometric with jitter and a cap, reset after a stable run, FATAL after a burst."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Decides how long to wait before the next start, and when to give up.

    `failure(now)` records a crash or failed start and returns the delay before the next
    attempt, or None when `max_restarts` failures came in a row without a stable run between.
    `started(now)` marks a successful start; a run that lasts `stable_after` seconds resets the count.
    """

    initial: float = 1.0
    cap: float = 30.0
    factor: float = 2.0
    max_restarts: int = 5
    stable_after: float = 30.0
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    _ready_since: float | None = None

    def started(self, now: float) -> None:
        self._ready_since = now

    def failure(self, now: float) -> float | None:
        if self._ready_since is not None and now - self._ready_since >= self.stable_after:
            self.failures = 0
        self._ready_since = None
        self.failures += 1
        if self.failures > self.max_restarts:
            return None
        return self.delay(self.failures)

    def delay(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based): initial * factor^(n-1), capped, ±jitter."""
        base = min(self.cap, self.initial * self.factor ** (attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))

    def reset(self) -> None:
        self.failures = 0
        self._ready_since = None
