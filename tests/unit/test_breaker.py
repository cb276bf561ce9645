"""Circuit breaker with a fake clock: open after N failures, one probe after the reset timeout."""

from __future__ import annotations

import asyncio

import pytest

from launcher.errors import AnyclaudeError, CircuitOpenError
from launcher.supervision.breaker import BreakerState, CircuitBreaker, Permit
from launcher.supervision.clock import FakeClock

B = BreakerState
Change = tuple[BreakerState, BreakerState, str]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def changes() -> list[Change]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[Change]) -> CircuitBreaker:
    b = CircuitBreaker(failure_threshold=3, reset_timeout=30.0, clock=clock, name="mlx")
    b.add_listener(lambda old, new, why: changes.append((old, new, why)))
    return b


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        b.record(False, b.allow())


def open_breaker(b: CircuitBreaker) -> None:
    fail(b, b.failure_threshold)
    assert b.state is B.OPEN


def test_closed_breaker_hands_out_plain_permits(breaker: CircuitBreaker) -> None:
    permit = breaker.allow()
    assert permit == Permit(probe=False)
    assert breaker.retry_after() == 0.0


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker, changes: list[Change]) -> None:
    fail(breaker, 2)
    assert breaker.state is B.CLOSED
    assert changes == []
    fail(breaker, 1)
    assert breaker.state is B.OPEN
    assert changes == [(B.CLOSED, B.OPEN, "3 consecutive failures")]


def test_success_in_between_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record(True, breaker.allow())
    assert breaker.failures == 0
    fail(breaker, 2)
    assert breaker.state is B.CLOSED
    fail(breaker, 1)
    assert breaker.state is B.OPEN


def test_failed_liveness_probes_open_the_breaker_too(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        breaker.record_probe(False)
    assert breaker.state is B.OPEN


def test_passing_probes_do_not_erase_failed_requests(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        breaker.record_probe(True)
        breaker.record(False, breaker.allow())
        breaker.record_probe(True)
    assert breaker.state is B.OPEN


def test_successful_requests_do_not_erase_failed_probes(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        breaker.record(True, breaker.allow())
        breaker.record_probe(False)
    assert breaker.state is B.OPEN


def test_a_passing_probe_never_closes_an_open_breaker(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    breaker.record_probe(True)
    clock.advance(30.0)
    assert breaker.allow().probe is True
    breaker.record_probe(True)
    assert breaker.state is B.HALF_OPEN


def test_open_breaker_refuses_with_remaining_time(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(10.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.allow()
    assert info.value.retry_after == pytest.approx(20.0)
    assert breaker.retry_after() == pytest.approx(20.0)
    assert "mlx" in info.value.message
    assert "Retry in 20 s" in (info.value.hint or "")
    assert isinstance(info.value, AnyclaudeError)


def test_retry_after_is_at_least_one_second(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError) as info:
        breaker.allow()
    assert info.value.retry_after == 1.0


def test_open_breaker_stays_open_until_the_timeout(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(29.999)
    with pytest.raises(CircuitOpenError):
        breaker.allow()
    assert breaker.state is B.OPEN


def test_after_timeout_exactly_one_probe_goes_through(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    open_breaker(breaker)
    clock.advance(30.0)
    probe = breaker.allow()
    assert probe.probe is True
    assert breaker.state is B.HALF_OPEN
    assert changes[-1][:2] == (B.OPEN, B.HALF_OPEN)
    for _ in range(3):
        with pytest.raises(CircuitOpenError) as info:
            breaker.allow()
        assert info.value.retry_after >= 1.0


def test_probe_success_closes(breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]) -> None:
    open_breaker(breaker)
    clock.advance(30.0)
    breaker.record(True, breaker.allow())
    assert breaker.state is B.CLOSED
    assert breaker.failures == 0
    assert changes[-1] == (B.HALF_OPEN, B.CLOSED, "probe succeeded")
    assert breaker.allow() == Permit(probe=False)
    assert breaker.allow() == Permit(probe=False)


def test_probe_failure_reopens_with_a_fresh_timeout(
    breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]
) -> None:
    open_breaker(breaker)
    clock.advance(30.0)
    breaker.record(False, breaker.allow())
    assert breaker.state is B.OPEN
    assert changes[-1] == (B.HALF_OPEN, B.OPEN, "probe failed")
    assert breaker.opened_at == clock.now()
    assert breaker.retry_after() == pytest.approx(30.0)
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        breaker.allow()
    clock.advance(1.0)
    assert breaker.allow().probe is True


def test_late_failure_of_an_ordinary_call_does_not_reopen_while_probe_is_out(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    before = breaker.allow()
    open_breaker(breaker)
    clock.advance(30.0)
    probe = breaker.allow()
    breaker.record(False, before)
    assert breaker.state is B.HALF_OPEN
    breaker.record(True, probe)
    assert breaker.state is B.CLOSED


def test_listeners_see_every_change_in_order(breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]) -> None:
    open_breaker(breaker)
    clock.advance(30.0)
    breaker.record(False, breaker.allow())
    clock.advance(30.0)
    breaker.record(True, breaker.allow())
    assert changes == [
        (B.CLOSED, B.OPEN, "3 consecutive failures"),
        (B.OPEN, B.HALF_OPEN, "reset timeout elapsed; letting one probe through"),
        (B.HALF_OPEN, B.OPEN, "probe failed"),
        (B.OPEN, B.HALF_OPEN, "reset timeout elapsed; letting one probe through"),
        (B.HALF_OPEN, B.CLOSED, "probe succeeded"),
    ]


def test_failures_while_open_cause_no_extra_events(breaker: CircuitBreaker, changes: list[Change]) -> None:
    open_breaker(breaker)
    for _ in range(5):
        breaker.record(False)
    assert breaker.state is B.OPEN
    assert len(changes) == 1


def test_reset_closes_and_forgets(breaker: CircuitBreaker, clock: FakeClock, changes: list[Change]) -> None:
    open_breaker(breaker)
    clock.advance(30.0)
    breaker.allow()  # probe out, never recorded
    breaker.reset("backend (re)started")
    assert breaker.state is B.CLOSED
    assert breaker.failures == 0
    assert changes[-1] == (B.HALF_OPEN, B.CLOSED, "backend (re)started")
    # The forgotten probe does not block the next half-open period.
    open_breaker(breaker)
    clock.advance(30.0)
    assert breaker.allow().probe is True


def test_reset_when_closed_emits_nothing(breaker: CircuitBreaker, changes: list[Change]) -> None:
    fail(breaker, 2)
    breaker.reset()
    assert breaker.failures == 0
    assert changes == []


def test_snapshot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    assert breaker.snapshot() == {"state": "closed", "failures": 0, "probe_failures": 0, "retry_after": 0.0}
    open_breaker(breaker)
    clock.advance(12.5)
    assert breaker.snapshot() == {"state": "open", "failures": 3, "probe_failures": 0, "retry_after": 17.5}


def test_fake_clock_sleep_advances_time() -> None:
    clock = FakeClock(start=5.0)
    asyncio.run(clock.sleep(2.5))
    asyncio.run(clock.sleep(-1.0))
    assert clock.now() == 7.5
