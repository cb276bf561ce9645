"""Writes that failed for lack of space: said once, and tried again until they work."""

from __future__ import annotations

import errno

from launcher.diskfull import WriteTrouble
from tests.harness import wait_until

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def _never() -> None:
    raise NO_SPACE


def test_a_failed_write_is_retried_until_it_works_then_said_to_work_again() -> None:
    trouble = WriteTrouble(retry_every=0.01)
    said: list[str] = []
    trouble.add_sink(said.append)
    tries: list[int] = []

    def retry() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise NO_SPACE

    trouble.failed("the state file of x", "/home/run/x.json", NO_SPACE, retry)
    wait_until(lambda: trouble.pending == [], 5, what="the retry to work")
    assert len(tries) == 3
    assert said[0].startswith("Cannot write the state file of x") and said[1:] == [
        "Writing the state file of x works again."
    ]
    assert trouble.failing == []


def test_a_newer_failure_replaces_the_retry_and_a_success_ends_it() -> None:
    trouble = WriteTrouble(retry_every=0.01)
    written: list[str] = []
    trouble.failed("history", "/h", NO_SPACE, _never)
    trouble.failed("history", "/h", NO_SPACE, lambda: written.append("new"))
    wait_until(lambda: written == ["new"], 5, what="the newer write")
    wait_until(lambda: trouble.pending == [], 5)

    trouble.failed("log", "/l", NO_SPACE, _never)
    trouble.ok("log")  # the writer itself wrote it meanwhile
    assert trouble.pending == []


def test_dropping_forgets_a_write_without_a_word() -> None:
    trouble = WriteTrouble(retry_every=3600)
    said: list[str] = []
    trouble.add_sink(said.append)
    trouble.failed("the state file of x", "/s", NO_SPACE, lambda: None)
    trouble.drop("the state file of x")
    assert trouble.pending == [] and trouble.failing == [] and len(said) == 1
