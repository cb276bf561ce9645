"""Supervisor states and the one table of allowed transitions. Constants only; imports nothing."""

from __future__ import annotations

from enum import StrEnum


class ProcessState(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    READY = "READY"
    DEGRADED = "DEGRADED"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FATAL = "FATAL"


S = ProcessState

TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    # A start ends ready, fails (retry later or give up), or is cancelled by a stop.
    S.STARTING: frozenset({S.READY, S.BACKOFF, S.FATAL, S.STOPPING}),
    # A crash right after a stable run that the restart budget does not cover ends in FATAL.
    S.READY: frozenset({S.DEGRADED, S.BACKOFF, S.FATAL, S.STOPPING}),
    # DEGRADED recovers, or is restarted (through BACKOFF) after enough missed probes.
    S.DEGRADED: frozenset({S.READY, S.BACKOFF, S.FATAL, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.FATAL, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED}),
    # A restart command goes READY -> STOPPING -> STOPPED -> STARTING.
    # Only an explicit start (restart command, config edit) leaves FATAL.
    S.FATAL: frozenset({S.STARTING, S.STOPPING}),
}

# States in which the backend process is believed to serve requests.
SERVING = frozenset({S.READY, S.DEGRADED})


def can_transition(old: ProcessState, new: ProcessState) -> bool:
    return new in TRANSITIONS[old]
