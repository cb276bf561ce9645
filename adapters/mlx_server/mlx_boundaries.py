"""Where one call ends inside an mlx-lm tool-call block, for formats whose block is not one call.

Most of mlx-lm's formats wrap each call in its own start/end markers, so the block's end marker ends the
call. Four put several calls in one block, each closed by a marker of its own (Kimi K2 and K3, MiniMax M2,
Muse Spark); Mistral has no end marker at all, so a call ends where its JSON value closes. Knowing that
lets the stream hand each call to the client as soon as it is complete instead of at the block's end, or
(Mistral) at the end of the whole reply.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from adapters.tool_parsers._json_repair import BracketScanner

NOT_A_CALL: Final = -1
"""`CallBoundary.end` result: what follows the start marker can never be a call of this format."""


class CallBoundary(Protocol):
    def end(self, body: str) -> int | None:
        """Where the first call in `body` (the block's text after its start marker or after the last call,
        only ever growing) ends: an index into `body`, None while not yet known, or NOT_A_CALL."""


class MarkerBoundary:
    """A call ends with its own closing marker."""

    def __init__(self, call_end: str) -> None:
        self._call_end = call_end
        self._searched = 0  # scan only what is new since the last look (calls can be long)

    def end(self, body: str) -> int | None:
        at = body.find(self._call_end, self._searched)
        if at < 0:
            self._searched = max(0, len(body) - len(self._call_end) + 1)
            return None
        return at + len(self._call_end)


# `NAME[ARGS]` or `NAME[CALL_ID]ID[ARGS]` (mistral-common's tokenizer v11 and later), then the JSON object.
_MISTRAL_HEAD = re.compile(r"\s*[\w.\-]+(?:\[CALL_ID\][\w\-]*)?\[ARGS\]\s*")
# Characters a head can hold before it is complete: one outside these settles that this is no call.
_MISTRAL_HEAD_CHARS = re.compile(r"\s*[\w.\-\[\]]*")
_MISTRAL_CALL_ID = re.compile(r"\[CALL_ID\][\w\-]*(?=\[ARGS\])")


class MistralBoundary:
    """`[{...}, ...]` (tokenizers up to v7) or `NAME[ARGS]{...}`: the call ends where its JSON value closes."""

    def __init__(self) -> None:
        self._scanner: BracketScanner | None = None

    def end(self, body: str) -> int | None:
        if self._scanner is None:
            start = self._json_start(body)
            if start is None or start == NOT_A_CALL:
                return start
            self._scanner = BracketScanner(start)
        return self._scanner.end(body)

    @staticmethod
    def _json_start(body: str) -> int | None:
        """Where the call's JSON value starts; None while the text so far cannot tell; or NOT_A_CALL."""
        first = len(body) - len(body.lstrip())
        if first == len(body):
            return None
        if body[first] == "[":  # a name comes first in the other form, so this is the list
            return first
        head = _MISTRAL_HEAD.match(body)
        if head is not None:
            if head.end() == len(body):
                return None
            return head.end() if body[head.end()] == "{" else NOT_A_CALL
        chars = _MISTRAL_HEAD_CHARS.match(body)
        return None if chars is not None and chars.end() == len(body) else NOT_A_CALL


_INNER_CALL_END: Final = {
    "kimi_k2": "<|tool_call_end|>",
    "kimi_k3": "<|close|>call<|sep|>",
    "minimax_m2": "</invoke>",
    "muse_spark": "</atem:invoke>",
}


def boundary_for(name: str) -> CallBoundary | None:
    """A fresh boundary finder for mlx-lm's format `name`; None when the block's end marker ends each call."""
    if name == "mistral":
        return MistralBoundary()
    call_end = _INNER_CALL_END.get(name)
    return MarkerBoundary(call_end) if call_end else None


def prepare_for(name: str, text: str) -> str:
    """The call's text as mlx-lm's parser for `name` reads it correctly.

    mlx-lm 0.32's Mistral parser takes the word before `[ARGS]` as the name, which after `[CALL_ID]` is the
    call's id: drop the id so the name is the function's.
    """
    return _MISTRAL_CALL_ID.sub("", text) if name == "mistral" else text
