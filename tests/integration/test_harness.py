"""The test harness itself: a backend that gave up ends the test at once instead of at its timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import start_serve


def test_waiting_for_ready_ends_at_once_when_the_backend_gave_up(tmp_path: Path) -> None:
    # Exits at once on every start: FATAL after a few quick restarts, and serve exits (code 3).
    s = start_serve(tmp_path, flags=("--exit-after", "0"), entry={"maxRestarts": 1})
    started = time.monotonic()
    try:
        with pytest.raises(AssertionError, match=r"anyclaude serve exited \(3\) while waiting for state READY"):
            s.wait_state("READY", timeout=120)
        assert time.monotonic() - started < 60  # not the 120 s timeout
    finally:
        s.close()
