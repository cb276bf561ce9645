"""JSON as models write it: strict first, then unambiguous repairs; and where a value ends in a growing text."""

from __future__ import annotations

import json

from adapters.tool_parsers._types import Malformed


def _reject_constant(name: str) -> object:
    # NaN and Infinity would make json.dumps write arguments that are not valid JSON.
    raise ValueError(f"{name} is not valid JSON")


DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}
_CLOSERS = {"{": "}", "[": "]"}


def _drop_trailing_comma(out: list[str]) -> None:
    k = len(out) - 1
    while k >= 0 and out[k].isspace():
        k -= 1
    if k >= 0 and out[k] == ",":
        del out[k]


def _repair_structure(text: str) -> str | None:
    """Fix trailing commas, Python literals, missing final closers and stray final closers, or give up."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "}]":
            if not stack:
                if text[i:].strip(" \t\r\n}]"):
                    return None
                break
            if stack.pop() != ch:
                return None
            _drop_trailing_comma(out)
        elif ch.isalpha():
            end = i
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            out.append(_PY_LITERALS.get(text[i:end], text[i:end]))
            i = end
            continue
        else:
            in_string = ch == '"'
        out.append(ch)
        i += 1
    if in_string:
        return None
    for closer in reversed(stack):
        _drop_trailing_comma(out)
        out.append(closer)
    return "".join(out)


def load_json(text: str) -> object:
    """Decode JSON, repairing it when the fix is unambiguous; raises Malformed otherwise."""
    try:
        return DECODER.decode(text)
    except ValueError as exc:
        reason = f"invalid JSON: {exc}"
    candidate = text
    # Single quotes are only swapped when the text has no double quotes, so no string can be cut in two.
    if '"' not in candidate and "\\" not in candidate:
        candidate = candidate.replace("'", '"')
    repaired = _repair_structure(candidate.strip())
    if repaired is not None:
        try:
            return DECODER.decode(repaired)
        except ValueError:
            pass
    raise Malformed(reason)


class BracketScanner:
    """Finds where a JSON object or array ends, fed a growing text; strings may contain brackets."""

    def __init__(self, start: int) -> None:
        self._pos = start
        self._depth = 0
        self._in_string = self._escaped = False

    def end(self, text: str) -> int | None:
        """Index just past the closing bracket of the value that starts at `start`, or None if not yet closed."""
        for i in range(self._pos, len(text)):
            ch = text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        self._pos = len(text)
        return None
