"""Tool calls a model wrote as plain text, matched against the tools the request offered.

Small models often answer a tool request with a ```json block or a bare JSON object instead of their
format's markup, and copy broken templates (`{{"name": ...}}`). A candidate becomes a call only when it
names an offered tool (exactly, else by a unique case-insensitive match) and its arguments fit that tool's
`input_schema`: an object, the required properties present, values coerced where the schema gives a type
and the text is unambiguous ("3" for an integer). JSON naming no offered tool is an example or a config
file, not a call: it stays text. One that names an offered tool but cannot be made to fit is a failed call:
it stays text too, and the reason says why (never the arguments' contents, which may be a user's files).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.tool_parsers._calls import _new_call_id, load_json_or_undoubled
from adapters.tool_parsers._json_repair import DECODER, load_json
from adapters.tool_parsers._types import Malformed, ToolCall

# Keys a model puts its arguments under; anything else beside "name" is taken as the arguments themselves.
_ARGUMENT_KEYS = ("arguments", "parameters", "input", "args")
_WRAPPER_KEYS = frozenset({"name", "type", "id"})
_NAME_KEY = re.compile(r"""["']name["']\s*:\s*["']([^"'\\]{1,200})["']""")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Verdict:
    """What a piece of text is: calls, or text (`failure` says why it looked like a failed call, else None)."""

    calls: list[ToolCall]
    failure: str | None = None


NOT_A_CALL = Verdict([])


def _tool_schema(tool: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """Name and parameter schema of an OpenAI function tool or an Anthropic tool."""
    function = tool.get("function")
    spec: Mapping[str, Any] = function if isinstance(function, Mapping) else tool
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        return None
    schema = spec.get("parameters", spec.get("input_schema"))
    return name, schema if isinstance(schema, Mapping) else {}


class Toolbox:
    """The request's tools: resolves names and fits arguments to each tool's schema."""

    def __init__(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self._schemas: dict[str, Mapping[str, Any]] = {}
        folded: dict[str, list[str]] = {}
        for tool in tools:
            found = _tool_schema(tool)
            if found is not None:
                self._schemas[found[0]] = found[1]
                folded.setdefault(found[0].casefold(), []).append(found[0])
        self._folded = {key: names[0] for key, names in folded.items() if len(names) == 1}

    def __bool__(self) -> bool:
        return bool(self._schemas)

    def resolve(self, name: object) -> str | None:
        """The offered tool `name` means: exact, else a unique case-insensitive match; None if none."""
        if not isinstance(name, str):
            return None
        name = name.strip()
        if name in self._schemas:
            return name
        return self._folded.get(name.casefold())

    def mentions_tool(self, text: str) -> bool:
        """Whether `text` has a `"name": "<an offered tool>"` pair (a call too broken to decode)."""
        return any(self.resolve(m.group(1)) for m in _NAME_KEY.finditer(text))

    def fit(self, name: str, args: object) -> ToolCall:
        """A call to the offered tool `name` with `args` made to fit its schema; raises Malformed."""
        if args is None or (isinstance(args, str) and not args.strip()):
            args = {}
        elif isinstance(args, str):
            try:
                args = load_json(args)
            except Malformed:
                raise Malformed(f"the arguments of {name} are a string that is not a JSON object") from None
        if not isinstance(args, dict):
            raise Malformed(f"the arguments of {name} are not an object")
        schema = self._schemas[name]
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        fitted = {
            key: _coerce(value, properties[key], name, key) if isinstance(properties.get(key), Mapping) else value
            for key, value in args.items()
        }
        required = schema.get("required")
        missing = [k for k in required if isinstance(k, str) and k not in fitted] if isinstance(required, list) else []
        if missing:
            raise Malformed(f"{name} is called without its required {', '.join(missing)}")
        return ToolCall(_new_call_id(), name, json.dumps(fitted, ensure_ascii=False))

    def call(self, name: str, arguments_json: str) -> ToolCall:
        """A call a format parser found, checked the same way; raises Malformed."""
        resolved = self.resolve(name)
        if resolved is None:
            raise Malformed(f"the call names {name[:60]!r}, which is not an offered tool")
        return self.fit(resolved, arguments_json)


def _types(spec: Mapping[str, Any]) -> list[str]:
    kind = spec.get("type")
    if isinstance(kind, str):
        return [kind]
    return [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def _coerce(value: object, spec: Mapping[str, Any], tool: str, key: str) -> object:
    """`value` as the schema's type where that is unambiguous; raises Malformed where it cannot be."""
    kinds = _types(spec)
    if not kinds:
        return value
    for kind in kinds:
        converted = _as_type(value, kind)
        if converted is not _NO:
            return converted
    raise Malformed(f"{tool}'s {key} should be {' or '.join(kinds)}")


_NO = object()


def _decoded(value: str) -> object:
    try:
        return DECODER.decode(value)
    except ValueError:
        return _NO


def _as_type(value: object, kind: str) -> object:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        if isinstance(value, str):
            return value
        return str(value) if is_number else _NO
    if kind == "integer":
        if is_number and float(value).is_integer():  # type: ignore[arg-type]
            return int(value)  # type: ignore[call-overload]
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value.strip())
        return _NO
    if kind == "number":
        if is_number:
            return value
        if isinstance(value, str):
            text = value.strip()
            if _INTEGER.fullmatch(text):
                return int(text)
            try:
                number = float(text)
            except ValueError:
                return _NO
            return number if math.isfinite(number) else _NO
        return _NO
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return _NO
    if kind == "array":
        if isinstance(value, list):
            return value
        decoded = _decoded(value) if isinstance(value, str) else _NO
        return decoded if isinstance(decoded, list) else _NO
    if kind == "object":
        if isinstance(value, dict):
            return value
        decoded = _decoded(value) if isinstance(value, str) else _NO
        return decoded if isinstance(decoded, dict) else _NO
    if kind == "null":
        return None if value is None else _NO
    return value


def _decode_values(text: str) -> list[object]:
    """Every JSON value in `text` (several in a row, or one repaired); raises Malformed."""
    values: list[object] = []
    try:
        pos = 0
        while pos < len(text):
            value, pos = DECODER.raw_decode(text, pos)
            values.append(value)
            while pos < len(text) and text[pos] in " \t\r\n,;":
                pos += 1
        return values
    except ValueError:
        pass
    return [load_json_or_undoubled(text)]


def _name_and_arguments(obj: dict[str, Any]) -> tuple[object, object]:
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    for key in _ARGUMENT_KEYS:
        if key in obj:
            return obj.get("name"), obj[key]
    # No arguments key: the other keys are the arguments (`{"name": "Read", "file_path": "/x"}`).
    return obj.get("name"), {k: v for k, v in obj.items() if k not in _WRAPPER_KEYS}


def json_verdict(text: str, tools: Toolbox) -> Verdict:
    """What a fenced block's body or a bare JSON object is: calls to offered tools, or text."""
    body = text.strip()
    if not body:
        return NOT_A_CALL
    try:
        values = _decode_values(body)
    except Malformed as exc:
        return Verdict([], f"its JSON cannot be read ({exc})") if tools.mentions_tool(body) else NOT_A_CALL
    objects = [item for value in values for item in (value if isinstance(value, list) else [value])]
    named = [
        (tools.resolve(name), args)
        for name, args in (_name_and_arguments(obj) for obj in objects if isinstance(obj, dict))
    ]
    if not any(resolved for resolved, _ in named):
        return NOT_A_CALL  # an example or a config file: no offered tool is named
    if len(named) != len(objects) or not all(resolved for resolved, _ in named):
        return Verdict([], "it mixes calls with other JSON")
    try:
        return Verdict([tools.fit(resolved, args) for resolved, args in named if resolved])
    except Malformed as exc:
        return Verdict([], str(exc))


__all__ = ["NOT_A_CALL", "Toolbox", "Verdict", "json_verdict"]
