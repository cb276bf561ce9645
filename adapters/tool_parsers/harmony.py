"""harmony (gpt-oss): `<|start|>assistant<|channel|>CHANNEL [to=functions.NAME] [<|constrain|>json]<|message|>BODY END`.

The analysis channel is reasoning, kept apart from content; a message addressed `to=functions.NAME` is a call.
"""

from __future__ import annotations

import re
from typing import Literal

from adapters.tool_parsers._calls import make_call
from adapters.tool_parsers._json_repair import load_json
from adapters.tool_parsers._stream import SteppedStream, find_first, next_marker, rescan_from
from adapters.tool_parsers._types import StreamEvent, ToolCall

START = "<|start|>"
CHANNEL = "<|channel|>"
MESSAGE = "<|message|>"
_CONSTRAIN = "<|constrain|>"
_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_MARKERS = (START, CHANNEL, MESSAGE, _CONSTRAIN, *_ENDS)
_CALL_ENDS = (*_ENDS, START, CHANNEL)
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_CHANNEL_NAME = re.compile(r"<\|channel\|>\s*(\w+)")

_HarmonyState = Literal["text", "header", "content", "reasoning", "call"]


class HarmonyStream(SteppedStream):
    def __init__(self) -> None:
        super().__init__("harmony")
        self._state: _HarmonyState = "text"
        self._header = ""
        self._call_name = ""
        self._searched = 0
        self._reasoning: list[str] = []

    @property
    def reasoning(self) -> str:
        return "\n\n".join(part.strip() for part in self._reasoning if part.strip())

    def finish(self) -> list[StreamEvent]:
        if self._state == "header":
            self._reject(self._buf, "a message header is not followed by <|message|>")
        elif self._state == "call":
            # <|call|> is a stop token, so servers often cut it off: the end of the output closes the call.
            self._deliver(self._header + self._buf, self._parse_call)
        else:
            self._flow(self._buf)
        self._buf, self._state = "", "text"
        self._sink.finish()
        return self._sink.take()

    def _step(self) -> bool:
        if self._state == "header":
            return self._step_header()
        if self._state == "call":
            return self._step_call()
        return self._step_flow()

    def _flow(self, text: str) -> None:
        if self._state == "reasoning":
            self._reasoning[-1] += text
        else:
            self._sink.text(text)

    def _step_flow(self) -> bool:
        index, marker = next_marker(self._buf, _MARKERS)
        self._flow(self._buf[:index])
        self._buf = self._buf[index:]
        if marker is None:
            return False
        if marker in (START, CHANNEL, _CONSTRAIN):
            self._end_message()
            self._state = "header"
            return True
        self._buf = self._buf[len(marker) :]
        if marker == MESSAGE and self._state != "text":
            self._flow(marker)  # a stray <|message|> inside a message is just text
        elif marker == MESSAGE:
            self._sink.markup()
            self._state = "content"
        else:
            self._end_message()
            self._state = "text"
        return True

    def _end_message(self) -> None:
        if self._state == "content":
            self._sink.paragraph()
        else:
            self._sink.markup()

    def _step_header(self) -> bool:
        index = self._buf.find(MESSAGE)
        if index < 0:
            return False
        header = self._buf[:index]
        self._buf = self._buf[index + len(MESSAGE) :]
        recipient = _RECIPIENT.search(header)
        channel = _CHANNEL_NAME.search(header)
        if recipient:
            self._state, self._searched = "call", 0
            self._header = header + MESSAGE
            self._call_name = recipient.group(1).removeprefix("functions.")
        elif channel and channel.group(1) == "analysis":
            self._state = "reasoning"
            self._reasoning.append("")
        else:
            self._state = "content"
        return True

    def _step_call(self) -> bool:
        index, marker = find_first(self._buf, _CALL_ENDS, self._searched)
        if marker is None:
            self._searched = rescan_from(self._buf, _CALL_ENDS)
            return False
        end = index + len(marker) if marker in _ENDS else index
        raw = self._header + self._buf[:end]
        self._buf = self._buf[end:]
        self._deliver(raw, self._parse_call)
        self._state = "text"
        return True

    def _parse_call(self, raw: str) -> list[ToolCall]:
        body = raw[len(self._header) :]
        for end in _ENDS:
            body = body.removesuffix(end)
        return [make_call(self._call_name, load_json(body) if body.strip() else {})]
