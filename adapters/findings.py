"""What a check found (`doctor`, `config validate`, the checks before a start), apart from the adapter
protocol so that modules the protocol itself uses (openblas) can say findings without importing it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One doctor finding: a distinct name, what was found, and how to fix it when it is not OK.

    `key` is set on a failure no restart can fix (a model path that does not exist): the entry key to
    edit. Such a check is run before the backend is started, and stops the start with that key named.
    """

    name: str
    status: CheckStatus
    finding: str
    fix: str | None = None
    key: str | None = None
