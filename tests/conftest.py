"""Shared test fixtures: isolation of $ANYCLAUDE_HOME and a finaliser that fails any test leaking a process.

Every process a test starts inherits `ANYCLAUDE_TEST_TAG=<unique id>` through its environment,
so leaked processes are found by their environment even after they were re-parented to init.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psutil
import pytest

from tests.tiny_model import tiny_model  # noqa: F401  (a session fixture for every test)

TAG = "ANYCLAUDE_TEST_TAG"


def tagged_processes(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Give each test its own tag and anyclaude home; fail the test if any tagged process outlives it."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    monkeypatch.setenv("ANYCLAUDE_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("ANYCLAUDE_CONFIG", raising=False)
    monkeypatch.delenv("ANYCLAUDE_MODE", raising=False)
    monkeypatch.delenv("ANYCLAUDE_PORT", raising=False)
    yield tag
    leaked = psutil.wait_procs(tagged_processes(tag), timeout=3.0)[1]
    if leaked:
        described = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in leaked if p.is_running()]
        for proc in leaked:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if described:
            pytest.fail(f"test leaked processes: {described}")
