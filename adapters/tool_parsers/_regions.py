"""Formats whose calls are regions opened by a marker inside otherwise plain text: hermes, qwen3_coder, mistral."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from adapters.tool_parsers._stream import SteppedStream, next_marker, rescan_from
from adapters.tool_parsers._types import Malformed, StreamEvent, ToolCall


class Region(Protocol):
    def end(self, buf: str) -> int | None:
        """Given the buffer from the opening marker on (it only grows), where the region ends, if known yet."""

    def calls(self, raw: str) -> list[ToolCall]: ...

    def calls_at_eof(self, raw: str) -> list[ToolCall]: ...


class TagRegion:
    """`OPEN ... CLOSE`; unterminated at the end of the output means the output was cut: returned as text."""

    def __init__(self, close: str, parse: Callable[[str], list[ToolCall]]) -> None:
        self._close = close
        self._parse = parse
        self._searched = 0

    def end(self, buf: str) -> int | None:
        index = buf.find(self._close, max(self._searched, 1))
        if index < 0:
            self._searched = rescan_from(buf, (self._close,))
            return None
        return index + len(self._close)

    def calls(self, raw: str) -> list[ToolCall]:
        return self._parse(raw)

    def calls_at_eof(self, raw: str) -> list[ToolCall]:
        # Only the opening tag is named: what follows it may be a user's file.
        raise Malformed(f"{raw[: raw.find('>') + 1]!r} is not terminated by {self._close!r}")


@dataclass(frozen=True)
class RegionFormat:
    """A format: its name and, for each opening marker, a factory for the region that marker opens."""

    name: str
    openers: dict[str, Callable[[], Region]]

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(self.openers)


class RegionStream(SteppedStream):
    def __init__(self, fmt: RegionFormat) -> None:
        super().__init__(fmt.name)
        self._fmt = fmt
        self._markers = fmt.markers
        self._region: Region | None = None

    def finish(self) -> list[StreamEvent]:
        if self._region is not None:
            self._deliver(self._buf, self._region.calls_at_eof)
        else:
            self._sink.text(self._buf)
        self._buf, self._region = "", None
        self._sink.finish()
        return self._sink.take()

    def _step(self) -> bool:
        if self._region is None:
            index, marker = next_marker(self._buf, self._markers)
            self._sink.text(self._buf[:index])
            self._buf = self._buf[index:]
            if marker is None:
                return False
            self._region = self._fmt.openers[marker]()
        end = self._region.end(self._buf)
        if end is None:
            return False
        raw, self._buf = self._buf[:end], self._buf[end:]
        self._deliver(raw, self._region.calls)
        self._region = None
        return True
