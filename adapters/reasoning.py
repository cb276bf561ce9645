"""Split a model's `<think>…</think>` reasoning from its answer, for a whole text or while streaming.

Pure Python, like `adapters.tool_parsers`, whose `TextDelta` carries the answer text here too.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.tool_parsers import TextDelta


@dataclass(frozen=True)
class ReasoningDelta:
    """Reasoning text that is safe to show: it can no longer turn out to be part of a tag."""

    text: str


ReasoningEvent = ReasoningDelta | TextDelta


def _partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that could still grow into `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningSplitter:
    """Streaming splitter: text between the start and end tags is reasoning, the rest is content.

    A tag split across deltas is held back until it is complete or proves to be text, so no tag ever reaches
    the output. Whitespace around the tags is trimmed: after `<think>` and before `</think>` from the
    reasoning, after `</think>` and before a leading `<think>` from the content.

    Args:
        start: the tag that opens reasoning.
        end: the tag that closes it.
        starts_in_reasoning: the chat template already opened the start tag in the prompt, so the output
            begins inside reasoning and only contains the end tag.
        exits: markers that end reasoning without an end tag and stay in the output, e.g. a tool call's start
            marker (some models call a tool straight from their thinking; mlx-lm's reply state machine does
            the same switch): the call then reaches the tool-call parser instead of staying in the reasoning.
    """

    def __init__(
        self,
        start: str = "<think>",
        end: str = "</think>",
        starts_in_reasoning: bool = False,
        exits: tuple[str, ...] = (),
    ) -> None:
        self._start = start
        self._end = end
        self._exits = tuple(marker for marker in exits if marker)
        self._inside = starts_in_reasoning
        self._buf = ""
        self._events: list[ReasoningEvent] = []
        self._reasoning_ws = ""
        self._trim_reasoning = True
        self._content_ws = ""
        self._trim_content = False
        self._content_emitted = False

    def feed(self, delta: str) -> list[ReasoningEvent]:
        """Consume a piece of generated text; return the events that are now certain."""
        self._buf += delta
        while True:
            tags = ((self._end, True), *((marker, False) for marker in self._exits)) if self._inside else ()
            tags = tags or ((self._start, True),)
            found = [(index, tag, consumed) for tag, consumed in tags if (index := self._buf.find(tag)) >= 0]
            if not found:
                safe = len(self._buf) - max(_partial_tag_len(self._buf, tag) for tag, _ in tags)
                self._route(self._buf[:safe])
                self._buf = self._buf[safe:]
                return self._take()
            index, tag, consumed = min(found)
            self._route(self._buf[:index])
            self._buf = self._buf[index + len(tag) :] if consumed else self._buf[index:]
            self._switch()

    def finish(self) -> list[ReasoningEvent]:
        """Flush at the end of generation; an unclosed reasoning block stays reasoning."""
        self._route(self._buf)
        self._buf = ""
        if not self._inside and not self._trim_content and self._content_ws:
            self._emit(TextDelta(self._content_ws))
        self._content_ws = ""
        return self._take()

    def _switch(self) -> None:
        if self._inside:
            self._reasoning_ws = ""  # whitespace before </think> is dropped
            self._trim_content = True
        else:
            if not self._content_emitted:
                self._content_ws = ""  # whitespace before a leading <think> is no content
            self._trim_reasoning = True
        self._inside = not self._inside

    def _route(self, text: str) -> None:
        if self._inside:
            self._reasoning(text)
        else:
            self._content(text)

    def _reasoning(self, text: str) -> None:
        if self._trim_reasoning:
            text = text.lstrip()
            if not text:
                return
            self._trim_reasoning = False
        full = self._reasoning_ws + text
        body = full.rstrip()
        self._reasoning_ws = full[len(body) :]
        if body:
            self._emit(ReasoningDelta(body))

    def _content(self, text: str) -> None:
        if self._trim_content:
            text = text.lstrip()
            if not text:
                return
            self._trim_content = False
        full = self._content_ws + text
        body = full.rstrip()
        # Trailing whitespace waits: if a tag follows it, it is dropped instead of sent and regretted.
        self._content_ws = full[len(body) :]
        if body:
            self._content_emitted = True
            self._emit(TextDelta(body))

    def _emit(self, event: ReasoningEvent) -> None:
        last = self._events[-1] if self._events else None
        if isinstance(last, ReasoningDelta) and isinstance(event, ReasoningDelta):
            self._events[-1] = ReasoningDelta(last.text + event.text)
        elif isinstance(last, TextDelta) and isinstance(event, TextDelta):
            self._events[-1] = TextDelta(last.text + event.text)
        else:
            self._events.append(event)

    def _take(self) -> list[ReasoningEvent]:
        events, self._events = self._events, []
        return events


def split_reasoning(text: str, starts_in_reasoning: bool = False) -> tuple[str, str]:
    """Split a complete generation into `(reasoning, content)` with the default `<think>` tags.

    Args:
        text: the generated text.
        starts_in_reasoning: the prompt already opened `<think>` (see `ReasoningSplitter`).

    Returns:
        The reasoning text and the content text, tags removed.
    """
    splitter = ReasoningSplitter(starts_in_reasoning=starts_in_reasoning)
    events = splitter.feed(text) + splitter.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, content


__all__ = ["ReasoningDelta", "ReasoningEvent", "ReasoningSplitter", "split_reasoning"]
