"""Anthropic content blocks → OpenAI message parts, one block type at a time.

The block types accepted are exactly those Claude Code sends (docs/reliability.md 17). Seen in 2.1.197's requests:
`text` (with `citations` and `cache_control`), `image` inside `tool_result` (Read on a picture), `document`
(Read on a PDF), `tool_use`, `tool_result`; and in the history of a conversation begun on the real API,
which anyclaude can swap to a local backend underneath a running Claude Code: `thinking`,
`redacted_thinking`, and the web search tool's `server_tool_use` / `web_search_tool_result`
(`web_fetch_tool_result` likewise). Those history blocks mean nothing to a local backend and are dropped
without a word. Any other type, or a type in a place the API does not allow it (a `tool_use` from the
user), is a 400 naming it: a silent drop let a model answer about content it never saw.

Blocks that are structurally wrong are a 400 naming the block too, as the API answers them: a text block
without text or with empty text, a tool_use with an empty id or name or without `input`, an image whose
media type the API does not take or whose data is not base64. Claude Code 2.1.197 sends none of these.
(`system` text blocks and mid-conversation `system` messages may be empty: that is text the client builds.)
"""

from __future__ import annotations

import binascii
import logging
from typing import Any

from launcher.bridge.codec import dumps_str
from launcher.bridge.documents import document_text
from launcher.bridge.errors import invalid_request

log = logging.getLogger("anyclaude.bridge")

USER_BLOCKS = frozenset({"text", "image", "document", "tool_result"})
# History from the real API: kept by the client, meaningless to a local backend, dropped.
HISTORY_ONLY = frozenset(
    {"thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result"}
)
ASSISTANT_BLOCKS = frozenset({"text", "tool_use"}) | HISTORY_ONLY
TOOL_RESULT_BLOCKS = frozenset({"text", "image", "document"})
# The image types the Messages API accepts.
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _kind(block: dict[str, Any], where: str, allowed: frozenset[str]) -> str:
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid_request(f"{where}.type: each content block needs a string type")
    if kind not in allowed:
        raise invalid_request(
            f"{where}.type: {kind!r} blocks are not accepted here (accepted: {', '.join(sorted(allowed))})"
        )
    return kind


def _non_empty(block: dict[str, Any], key: str, where: str, what: str) -> str:
    value = block.get(key)
    if not isinstance(value, str) or not value:
        raise invalid_request(f"{where}.{key}: {what} needs a non-empty string {key}")
    return value


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid_request(f"{where}.text: a text block needs a string text")
    return text


def _content_text(block: dict[str, Any], where: str) -> str:
    """A message's text block: the API refuses an empty one."""
    text = _text(block, where)
    if not text:
        raise invalid_request(f"{where}.text: text content blocks must be non-empty")
    return text


def plain_text(content: Any, where: str) -> list[str]:
    """The text of a string or of a list of text blocks (a system prompt takes nothing else)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid_request(f"{where}: must be a string or a list of content blocks")
    out = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise invalid_request(f"{where}.{j}: a content block must be an object")
        _kind(block, f"{where}.{j}", frozenset({"text"}))
        out.append(_text(block, f"{where}.{j}"))
    return out


def image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"{where}.source: an image block needs a source object")
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise invalid_request(f"{where}.source: base64 images need media_type and data strings")
        if media not in IMAGE_MEDIA_TYPES:
            raise invalid_request(
                f"{where}.source.media_type: {media!r} is not an image type the API takes "
                f"({', '.join(IMAGE_MEDIA_TYPES)})"
            )
        _check_base64(data, f"{where}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid_request(f"{where}.source.type: expected 'base64' or 'url'")


def _check_base64(data: str, where: str) -> None:
    # Decoding in C runs at about 1 GB/s: a few milliseconds for the largest screenshot Claude Code sends.
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise invalid_request(f"{where}: the image data is not valid base64") from None
    if not decoded:
        raise invalid_request(f"{where}: the image data is empty")


def _tool_result(block: dict[str, Any], where: str, error_prefix: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the `tool` message, image parts the result carried: those travel in the next user turn)."""
    call_id = _non_empty(block, "tool_use_id", where, "a tool_result")
    # `null` content is read as no content: unambiguous, and refusing it would refuse every later turn
    # of a conversation that holds one.
    content = block.get("content") if block.get("content") is not None else ""
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, inner in enumerate(content):
            at = f"{where}.content.{j}"
            if not isinstance(inner, dict):
                raise invalid_request(f"{at}: a content block must be an object")
            kind = _kind(inner, at, TOOL_RESULT_BLOCKS)
            if kind == "text":
                texts.append(_content_text(inner, at))
            elif kind == "image":
                images.append(image_part(inner, at))
            else:
                texts.append(document_text(inner, at))
    else:
        raise invalid_request(f"{where}.content: a tool_result's content must be a string or a list")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = error_prefix + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def convert_user(content: Any, where: str, error_prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tool messages in order, the user turn's parts) for one Anthropic user message."""
    if isinstance(content, str):
        return [], [{"type": "text", "text": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        kind = _kind(block, at, USER_BLOCKS)
        if kind == "text":
            parts.append({"type": "text", "text": _content_text(block, at)})
        elif kind == "tool_result":
            message, images = _tool_result(block, at, error_prefix)
            results.append(message)
            parts.extend(images)
        elif kind == "image":
            parts.append(image_part(block, at))
        else:
            parts.append({"type": "text", "text": document_text(block, at)})
    return results, parts


def convert_assistant(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, OpenAI tool_calls) for one Anthropic assistant message."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        kind = _kind(block, at, ASSISTANT_BLOCKS)
        if kind == "text":
            texts.append(_content_text(block, at))
        elif kind == "tool_use":
            call_id = _non_empty(block, "id", at, "a tool_use block")
            name = _non_empty(block, "name", at, "a tool_use block")
            tool_input = block.get("input")
            if not isinstance(tool_input, dict):
                raise invalid_request(f"{at}.input: a tool_use block needs an input object")
            arguments = dumps_str(tool_input)
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return "".join(texts), calls
