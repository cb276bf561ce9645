"""Restart delays: about 1, 2, 4, 8, 16 s with jitter, capped, FATAL after a burst, reset after a stable run."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.supervision.backoff import Backoff


def backoff(**kw: object) -> Backoff:
    kw.setdefault("rng", random.Random(1234))
    return Backoff(**kw)  # type: ignore[arg-type]


def test_delays_double_from_one_second_within_jitter() -> None:
    b = backoff()
    delays = [b.failure(now=float(i)) for i in range(5)]
    for got, base in zip(delays, [1, 2, 4, 8, 16], strict=True):
        assert got is not None
        assert base * 0.9 <= got <= base * 1.1, (got, base)


def test_delays_without_jitter_are_exact() -> None:
    b = backoff(jitter=0.0)
    assert [b.failure(float(i)) for i in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_jitter_actually_spreads_the_delays() -> None:
    b = backoff()
    delays = [b.delay(1) for _ in range(20)]
    assert len(set(delays)) > 1
    assert all(0.9 <= d <= 1.1 for d in delays)


def test_same_seed_gives_same_delays() -> None:
    a, b = backoff(rng=random.Random(7)), backoff(rng=random.Random(7))
    assert [a.failure(0) for _ in range(5)] == [b.failure(0) for _ in range(5)]


def test_delay_is_capped() -> None:
    b = backoff(jitter=0.0, cap=5.0, max_restarts=10)
    assert [b.failure(0) for _ in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    attempt=st.integers(1, 30),
    jitter=st.floats(0.0, 0.5),
    cap=st.floats(1.0, 120.0),
)
def test_delay_stays_within_jitter_of_capped_base(seed: int, attempt: int, jitter: float, cap: float) -> None:
    b = Backoff(rng=random.Random(seed), jitter=jitter, cap=cap)
    base = min(cap, 2.0 ** (attempt - 1))
    got = b.delay(attempt)
    assert base * (1 - jitter) - 1e-9 <= got <= base * (1 + jitter) + 1e-9


def test_gives_up_after_max_restarts_failures() -> None:
    b = backoff(max_restarts=5)
    results = [b.failure(float(i)) for i in range(7)]
    assert all(r is not None for r in results[:5])
    assert results[5:] == [None, None]
    assert b.failures == 7


def test_zero_max_restarts_gives_up_at_once() -> None:
    assert backoff(max_restarts=0).failure(0.0) is None


def test_stable_run_resets_to_the_first_delay() -> None:
    b = backoff(jitter=0.0, stable_after=30.0)
    for i in range(4):
        b.failure(float(i))
    b.started(100.0)
    assert b.failure(130.0) == 1.0
    assert b.failures == 1


def test_short_run_does_not_reset() -> None:
    b = backoff(jitter=0.0, stable_after=30.0)
    for i in range(3):
        b.failure(float(i))
    b.started(100.0)
    assert b.failure(129.9) == 8.0
    assert b.failures == 4


def test_stable_run_reset_is_used_once() -> None:
    b = backoff(jitter=0.0, stable_after=30.0)
    b.failure(0.0)
    b.failure(1.0)
    b.started(10.0)
    assert b.failure(50.0) == 1.0
    # No new start was marked: the next crash is the second in a row again.
    assert b.failure(500.0) == 2.0


def test_time_without_a_start_does_not_reset() -> None:
    b = backoff(jitter=0.0)
    b.failure(0.0)
    assert b.failure(1_000_000.0) == 2.0


def test_stable_run_lifts_fatal() -> None:
    b = backoff(jitter=0.0, max_restarts=2)
    assert [b.failure(0.0) for _ in range(3)] == [1.0, 2.0, None]
    b.started(10.0)
    assert b.failure(40.0) == 1.0


def test_reset_clears_failures_and_start() -> None:
    b = backoff(jitter=0.0, max_restarts=2)
    for _ in range(3):
        b.failure(0.0)
    b.started(0.0)
    b.reset()
    assert b.failures == 0
    assert b.failure(0.0) == 1.0


@pytest.mark.parametrize(("initial", "factor"), [(0.5, 3.0), (2.0, 1.5)])
def test_initial_and_factor_are_used(initial: float, factor: float) -> None:
    b = backoff(jitter=0.0, initial=initial, factor=factor, cap=1000.0)
    assert [b.failure(0.0) for _ in range(3)] == [initial, initial * factor, initial * factor**2]
