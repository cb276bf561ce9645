"""Qwen3-Coder XML calls: `<function=NAME><parameter=P>VALUE</parameter>...</function>`.

Qwen3-Coder also wraps them in `<tool_call>` (see `hermes`); the registry combines both openers.
"""

from __future__ import annotations

from adapters.tool_parsers._calls import make_call
from adapters.tool_parsers._json_repair import DECODER
from adapters.tool_parsers._regions import Region, TagRegion
from adapters.tool_parsers._types import Malformed, ToolCall

FUNCTION_OPEN = "<function="
FUNCTION_CLOSE = "</function>"
PARAMETER_OPEN = "<parameter="
PARAMETER_CLOSE = "</parameter>"


def _open_tag(body: str, pos: int, opener: str) -> tuple[str, int]:
    """The NAME of the `<opener NAME>` tag at `pos` and the index of its `>`; raises Malformed if it is not closed."""
    name_end = body.find(">", pos)
    if name_end < 0:
        raise Malformed(f"a {opener}...> tag is not closed")
    return body[pos + len(opener) : name_end].strip(), name_end


def _parameter_value(raw: str) -> object:
    value = raw.removeprefix("\n").removesuffix("\n")
    try:
        parsed = DECODER.decode(value)
    except ValueError:
        return value
    return value if isinstance(parsed, str) else parsed


def _xml_parameters(body: str) -> dict[str, object]:
    params: dict[str, object] = {}
    pos = body.find(PARAMETER_OPEN)
    while pos >= 0:
        name, name_end = _open_tag(body, pos, PARAMETER_OPEN)
        value_start = name_end + 1
        close = body.find(PARAMETER_CLOSE, value_start)
        # A missing </parameter> ends the value at the next parameter (or at the end of the function).
        next_open = body.find(PARAMETER_OPEN, value_start)
        value_end = close if close >= 0 else (next_open if next_open >= 0 else len(body))
        params[name] = _parameter_value(body[value_start:value_end])
        pos = body.find(PARAMETER_OPEN, value_end)
    return params


def xml_calls(body: str) -> list[ToolCall]:
    """Every `<function=...>` call in `body`; raises Malformed when there is none or a tag is broken."""
    calls: list[ToolCall] = []
    pos = body.find(FUNCTION_OPEN)
    while pos >= 0:
        name, name_end = _open_tag(body, pos, FUNCTION_OPEN)
        if not name:
            raise Malformed("a <function=...> tag has no name")
        close = body.find(FUNCTION_CLOSE, name_end)
        end = close if close >= 0 else len(body)
        calls.append(make_call(name, _xml_parameters(body[name_end + 1 : end])))
        pos = body.find(FUNCTION_OPEN, end)
    if not calls:
        raise Malformed("no <function=...> in the tool call")
    return calls


def function_region() -> Region:
    """A bare `<function=...>...</function>` call, outside any `<tool_call>`."""
    return TagRegion(FUNCTION_CLOSE, xml_calls)
