"""Turn model output text into OpenAI-style tool calls, for a whole text or incrementally while streaming.

Pure Python on purpose: the MLX server and the Anthropic bridge both use it, and the bridge must not import mlx.

Every format is parsed by its streaming parser; `parse` feeds the whole text at once, so a streamed generation
and a complete one always give the same content and calls. Malformed markup comes back as text, with a warning
on the `anyclaude.tools` logger.

This module holds the registry and format detection; each format lives in its own module.
"""

from __future__ import annotations

from collections.abc import Callable

from adapters.tool_parsers import harmony, hermes, llama3_json, mistral, qwen3_coder
from adapters.tool_parsers._regions import RegionFormat, RegionStream
from adapters.tool_parsers._stream import StreamingToolParser, StreamParser
from adapters.tool_parsers._types import (
    ParsedOutput,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolParser,
)

_HERMES = RegionFormat("hermes", {hermes.TOOL_CALL_OPEN: hermes.tool_call_region})
_QWEN3_CODER = RegionFormat(
    "qwen3_coder",
    {hermes.TOOL_CALL_OPEN: hermes.tool_call_region, qwen3_coder.FUNCTION_OPEN: qwen3_coder.function_region},
)
_MISTRAL = RegionFormat("mistral", {mistral.MARKER: mistral.MistralRegion})

PARSERS: dict[str, ToolParser] = {
    "hermes": StreamParser("hermes", lambda: RegionStream(_HERMES)),
    "qwen3_coder": StreamParser("qwen3_coder", lambda: RegionStream(_QWEN3_CODER)),
    "harmony": StreamParser("harmony", harmony.HarmonyStream),
    "llama3_json": StreamParser("llama3_json", llama3_json.Llama3Stream),
    "mistral": StreamParser("mistral", lambda: RegionStream(_MISTRAL)),
}


def get_parser(name: str) -> ToolParser:
    """Return the parser registered under `name`.

    Raises:
        KeyError: no such parser; the message lists the known names.
    """
    try:
        return PARSERS[name]
    except KeyError:
        raise KeyError(f"unknown tool parser {name!r}; known: {', '.join(sorted(PARSERS))}") from None


_TEMPLATE_MARKERS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("harmony", lambda t: harmony.CHANNEL in t or "to=functions." in t),
    ("mistral", lambda t: mistral.MARKER in t),
    ("qwen3_coder", lambda t: qwen3_coder.FUNCTION_OPEN in t and qwen3_coder.PARAMETER_OPEN in t),
    ("hermes", lambda t: hermes.TOOL_CALL_OPEN in t),
    ("llama3_json", lambda t: llama3_json.PYTHON_TAG in t or ("ipython" in t and "<|start_header_id|>" in t)),
)


def _parser_for_model_type(model_type: str) -> str | None:
    kind = model_type.lower()
    if kind.startswith("gpt_oss"):
        return "harmony"
    if kind.startswith("qwen3") and "coder" in kind:
        return "qwen3_coder"
    if kind.startswith("qwen"):
        return "hermes"
    if kind.startswith(("mistral", "ministral", "mixtral", "pixtral", "devstral", "magistral")):
        return "mistral"
    if kind.startswith("llama"):
        return "llama3_json"
    return None


def detect_parser(chat_template: str | None, model_type: str | None = None) -> ToolParser | None:
    """Choose the parser for a model from markers in its chat template, else from its `model_type`.

    Args:
        chat_template: the tokenizer's chat template text, if any.
        model_type: `model_type` from the model's config.json (a name containing "coder" picks qwen3_coder).

    Returns:
        The parser, or None when neither says which format the model writes.
    """
    if chat_template:
        for name, matches in _TEMPLATE_MARKERS:
            if matches(chat_template):
                return PARSERS[name]
    found = _parser_for_model_type(model_type) if model_type else None
    return PARSERS[found] if found else None


_ANY_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("harmony", (harmony.CHANNEL, harmony.MESSAGE, harmony.START)),
    ("mistral", (mistral.MARKER,)),
    ("qwen3_coder", (hermes.TOOL_CALL_OPEN, qwen3_coder.FUNCTION_OPEN)),
    ("llama3_json", ("{",)),
)


def parse_any(text: str) -> ParsedOutput:
    """Parse text from a backend whose format is unknown, trying every format whose markers it contains.

    Returns:
        The first parse that finds tool calls; otherwise the first format's parse (harmony drops its
        reasoning channel from content), or the text unchanged when no format's markers occur.
    """
    first: ParsedOutput | None = None
    for name, markers in _ANY_ORDER:
        if not any(marker in text for marker in markers):
            continue
        parsed = PARSERS[name].parse(text)
        if parsed.tool_calls:
            return parsed
        first = first or parsed
    return first or ParsedOutput(text, [])


__all__ = [
    "PARSERS",
    "ParsedOutput",
    "StreamEvent",
    "StreamingToolParser",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolParser",
    "detect_parser",
    "get_parser",
    "parse_any",
]
