"""Build `ToolCall`s from a name and arguments, or from decoded `{"name": ..., "arguments": ...}` objects."""

from __future__ import annotations

import json
import secrets

from adapters.tool_parsers._json_repair import DECODER, load_json
from adapters.tool_parsers._types import Malformed, ToolCall


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def make_call(name: str, args: object) -> ToolCall:
    """A call to `name`; `args` is a dict, JSON text for one, or empty; anything else raises Malformed."""
    if args is None or (isinstance(args, str) and not args.strip()):
        args = {}
    elif isinstance(args, str):
        args = load_json(args)
    if not isinstance(args, dict):
        raise Malformed(f"the arguments of {name!r} are not a JSON object")
    return ToolCall(_new_call_id(), name.strip(), json.dumps(args, ensure_ascii=False))


def call_from_object(obj: object) -> ToolCall:
    """Build a call from `{"name": ..., "arguments"|"parameters": ...}` (optionally wrapped in "function")."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict):
        raise Malformed("a tool call must be a JSON object")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Malformed("the tool call has no name")
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters")
    return make_call(name, args)


def calls_from_values(values: list[object]) -> list[ToolCall]:
    """Calls from decoded values, each a call object or a list of them."""
    objects = [item for value in values for item in (value if isinstance(value, list) else [value])]
    if not objects:
        raise Malformed("the tool call list is empty")
    return [call_from_object(obj) for obj in objects]


def json_calls(body: str) -> list[ToolCall]:
    """One or more call objects (or a list of them) in a row."""
    text = body.strip()
    if not text:
        raise Malformed("the tool call is empty")
    values: list[object] = []
    try:
        pos = 0
        while pos < len(text):
            value, pos = DECODER.raw_decode(text, pos)
            values.append(value)
            while pos < len(text) and text[pos] in " \t\r\n,;":
                pos += 1
    except ValueError:
        values = [load_json_or_undoubled(text)]
    return calls_from_values(values)


def load_json_or_undoubled(text: str) -> object:
    """`load_json`, else with doubled braces made single: a broken chat template shows calls as
    `{{"name": ...}}` and models copy it. Raises Malformed (the first reason) when neither reads."""
    try:
        return load_json(text)
    except Malformed as exc:
        if "{{" not in text:
            raise
        first = exc
    try:
        return load_json(text.replace("{{", "{").replace("}}", "}"))
    except Malformed:
        raise first from None
