"""Stop sequences over streamed text, safe for streaming.

Text that could be the start of a stop sequence is held back until the next piece decides it:
a client is never sent characters that a later stop match would have to retract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopResult:
    """What may be sent now, and whether a stop sequence ended the text."""

    text: str
    stopped: bool


class StopMatcher:
    """Feed decoded text piece by piece; get back what is safe to send.

    Args:
        stops: the stop strings (empty strings are ignored). The earliest match in the text wins,
            and the stop string itself is never part of the output.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._matched: str | None = None

    @property
    def stopped(self) -> bool:
        return self._matched is not None

    @property
    def matched(self) -> str | None:
        """The stop sequence that ended the text, once one has."""
        return self._matched

    def feed(self, piece: str) -> StopResult:
        """Add `piece`; returns the text that can be sent and whether generation should stop."""
        if self._matched is not None:
            return StopResult("", True)
        if not self._stops:
            return StopResult(piece, False)
        text = self._held + piece
        found = _earliest_match(text, self._stops)
        if found is not None:
            cut, self._matched = found
            self._held = ""
            return StopResult(text[:cut], True)
        keep = partial_suffix_length(text, self._stops)
        self._held = text[len(text) - keep :] if keep else ""
        return StopResult(text[: len(text) - keep], False)

    def flush(self) -> str:
        """The held-back text once generation ended without completing a stop sequence."""
        held, self._held = self._held, ""
        return "" if self._matched is not None else held


def _earliest_match(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Where the earliest stop sequence starts in `text`, and which one (the longest, of two at one place)."""
    found = [(at, -len(stop), stop) for stop in stops if (at := text.find(stop)) >= 0]
    if not found:
        return None
    at, _, stop = min(found)
    return at, stop


def partial_suffix_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:length]):
                best = length
                break
    return best
