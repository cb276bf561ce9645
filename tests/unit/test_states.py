"""The one transition table: every (old, new) pair, and the rules docs/reliability.md builds on it."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from launcher.supervision.states import SERVING, TRANSITIONS, ProcessState, can_transition

S = ProcessState

# Written out independently of launcher/supervision/states.py so that a drift in the table fails a test.
EXPECTED: dict[ProcessState, set[ProcessState]] = {
    S.STOPPED: {S.STARTING},
    S.STARTING: {S.READY, S.BACKOFF, S.FATAL, S.STOPPING},
    S.READY: {S.DEGRADED, S.BACKOFF, S.FATAL, S.STOPPING},
    S.DEGRADED: {S.READY, S.BACKOFF, S.FATAL, S.STOPPING},
    S.BACKOFF: {S.STARTING, S.FATAL, S.STOPPING},
    S.STOPPING: {S.STOPPED},
    S.FATAL: {S.STARTING, S.STOPPING},
}

ALL_PAIRS = list(itertools.product(list(S), repeat=2))


def test_states_are_readable_strings_in_json() -> None:
    assert [str(s) for s in S] == ["STOPPED", "STARTING", "READY", "DEGRADED", "BACKOFF", "STOPPING", "FATAL"]
    assert S("READY") is S.READY


def test_table_has_an_entry_for_every_state() -> None:
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{o}->{n}" for o, n in ALL_PAIRS])
def test_every_pair_matches_the_table(old: ProcessState, new: ProcessState) -> None:
    assert can_transition(old, new) is (new in EXPECTED[old])


def test_no_state_transitions_to_itself() -> None:
    assert not any(can_transition(s, s) for s in S)


def test_fatal_is_left_only_by_an_explicit_start_or_a_stop() -> None:
    assert {new for new in S if can_transition(S.FATAL, new)} == {S.STARTING, S.STOPPING}


def test_stopping_only_ends_in_stopped() -> None:
    assert {new for new in S if can_transition(S.STOPPING, new)} == {S.STOPPED}


def test_stopped_is_entered_only_through_stopping() -> None:
    assert {old for old in S if can_transition(old, S.STOPPED)} == {S.STOPPING}


def test_every_state_can_be_stopped() -> None:
    for state in set(S) - {S.STOPPED, S.STOPPING}:
        assert can_transition(state, S.STOPPING), state


def _reachable(start: ProcessState) -> set[ProcessState]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_from_stopped_and_leads_back_to_it() -> None:
    assert _reachable(S.STOPPED) == set(S)
    for state in S:
        assert S.STOPPED in _reachable(state), state


def test_restart_path_ready_stopping_stopped_starting() -> None:
    path = [S.READY, S.STOPPING, S.STOPPED, S.STARTING, S.READY]
    assert all(can_transition(a, b) for a, b in itertools.pairwise(path))


def test_serving_set() -> None:
    assert frozenset({S.READY, S.DEGRADED}) == SERVING
    assert S.FATAL not in SERVING
