"""Anthropic content blocks → OpenAI message parts, one block type at a time.

Blocks that are structurally wrong (no `type`, a text block without text, a tool_use without id)
raise a 400 naming the block. Block types a local backend has no use for (`thinking`, server tool
results, block kinds newer than this code) are dropped with one log line per kind: refusing them
would break real Claude Code traffic for no gain.
"""

from __future__ import annotations

import logging
from typing import Any

from launcher.bridge.codec import dumps_str
from launcher.bridge.errors import invalid_request

log = logging.getLogger("anyclaude.bridge")

_SILENT = frozenset({"thinking", "redacted_thinking"})
_logged: set[str] = set()


def _drop(kind: str, where: str) -> None:
    if kind not in _SILENT and kind not in _logged:
        _logged.add(kind)
        log.info("dropping %s blocks (first at %s): the backend cannot use them", kind, where)


def _kind(block: dict[str, Any], where: str) -> str:
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid_request(f"{where}.type: each content block needs a string type")
    return kind


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid_request(f"{where}.text: a text block needs a string text")
    return text


def plain_text(content: Any, where: str) -> list[str]:
    """The text of a string or of a list of blocks; other block kinds are skipped."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid_request(f"{where}: must be a string or a list of content blocks")
    out = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise invalid_request(f"{where}.{j}: a content block must be an object")
        if _kind(block, f"{where}.{j}") == "text":
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
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid_request(f"{where}.source.type: expected 'base64' or 'url'")


def _document_text(block: dict[str, Any]) -> str | None:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
        return str(source["data"])
    return None


def _tool_result(block: dict[str, Any], where: str, error_prefix: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the `tool` message, image parts the result carried: those travel in the next user turn)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise invalid_request(f"{where}.tool_use_id: a tool_result needs the id of its tool_use")
    content = block.get("content", "")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, inner in enumerate(content):
            if not isinstance(inner, dict):
                raise invalid_request(f"{where}.content.{j}: a content block must be an object")
            kind = _kind(inner, f"{where}.content.{j}")
            if kind == "text":
                texts.append(_text(inner, f"{where}.content.{j}"))
            elif kind == "image":
                images.append(image_part(inner, f"{where}.content.{j}"))
            else:
                _drop(kind, f"{where}.content.{j}")
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
        kind = _kind(block, at)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "tool_result":
            message, images = _tool_result(block, at, error_prefix)
            results.append(message)
            parts.extend(images)
        elif kind == "image":
            parts.append(image_part(block, at))
        elif kind == "document" and (doc := _document_text(block)) is not None:
            parts.append({"type": "text", "text": doc})
        else:
            _drop(kind, at)
    return results, parts


def convert_assistant(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, OpenAI tool_calls) for one Anthropic assistant message."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        kind = _kind(block, at)
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise invalid_request(f"{at}: a tool_use block needs string id and name")
            arguments = dumps_str(block.get("input", {}))
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        else:
            _drop(kind, at)
    return "".join(texts), calls
