"""The gate's lease: the breaker's permit travels with the request, and the request counts in flight until
its outcome is reported."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.base import ApiKind, LaunchSpec
from launcher.bridge.upstream import Upstream
from launcher.paths import Home
from launcher.supervision.breaker import BreakerState, CircuitBreaker
from launcher.supervision.clock import FakeClock
from launcher.supervision.gate import SupervisorGate
from launcher.supervision.states import ProcessState
from launcher.supervision.supervisor import Supervisor


def ready_gate(tmp_path: Path, clock: FakeClock) -> tuple[SupervisorGate, Supervisor, Upstream]:
    spec = LaunchSpec("local", "command", (), "http://127.0.0.1:9/v1", ApiKind.OPENAI, None)
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=30.0, clock=clock, name="local")
    supervisor = Supervisor(spec, Home(tmp_path).ensure(), breaker=breaker, clock=clock, spawn_process=False)
    supervisor.state = ProcessState.READY  # as a started backend that answered its readiness probe
    upstream = Upstream("local", spec.base_url, ApiKind.OPENAI)
    return SupervisorGate(supervisor, upstream, wait_timeout=1.0), supervisor, upstream


def test_a_long_stream_ending_well_does_not_close_a_half_open_breaker_in_place_of_its_trial(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(start=1000.0)
        gate, supervisor, upstream = ready_gate(tmp_path, clock)
        long_stream = await gate.acquire()  # let through while the breaker was closed
        for _ in range(2):
            (await gate.acquire()).report(False)
        assert supervisor.breaker.state is BreakerState.OPEN
        clock.advance(30.0)
        trial = await gate.acquire()
        assert supervisor.breaker.state is BreakerState.HALF_OPEN
        assert gate.in_flight(upstream) == 2
        long_stream.report(True)
        assert supervisor.breaker.state is BreakerState.HALF_OPEN, "only the trial's outcome decides"
        assert gate.in_flight(upstream) == 1
        trial.report(False)
        assert supervisor.breaker.state is BreakerState.OPEN
        trial.report(True)  # a second report of one lease counts for nothing
        assert supervisor.breaker.state is BreakerState.OPEN and gate.in_flight(upstream) == 0

    asyncio.run(scenario())


def test_a_failure_of_an_old_request_does_not_reopen_while_the_trial_is_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(start=1000.0)
        gate, supervisor, _ = ready_gate(tmp_path, clock)
        old = await gate.acquire()
        for _ in range(2):
            (await gate.acquire()).report(False)
        clock.advance(30.0)
        trial = await gate.acquire()
        old.report(False)
        assert supervisor.breaker.state is BreakerState.HALF_OPEN
        trial.report(True)
        assert supervisor.breaker.state is BreakerState.CLOSED

    asyncio.run(scenario())
