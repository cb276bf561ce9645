"""Anthropic `document` blocks → text a local model can read.

Claude Code's Read tool sends a PDF as a `document` block with the file in base64 (seen in 2.1.197). No
OpenAI-style backend takes PDFs, and dropping the block (what this bridge did before) let the model
answer about a file it never saw. So the text layer is extracted here with pypdf (pure Python; imported
only when a PDF arrives, so the CLI starts no slower) and sent as text, page by page. A PDF with no
text layer (a scan), one pypdf cannot read, or a document given by URL or file id is refused with a 400
that says why: the model would otherwise invent its content.

Plain-text documents (`source.type: "text"`) and documents made of content blocks (`"content"`) are
their text.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import logging
from typing import Any

from launcher.bridge.errors import ApiError, invalid_request

log = logging.getLogger("anyclaude.bridge")

PDF = "application/pdf"


def document_text(block: dict[str, Any], where: str) -> str:
    """The text of one `document` block. Raises ApiError (400) when it has none a model could read."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"{where}.source: a document block needs a source object")
    kind = source.get("type")
    if kind == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise invalid_request(f"{where}.source.data: a text document needs its text as a string")
        return _titled(block, data)
    if kind == "content":
        parts = source.get("content")
        if isinstance(parts, str):
            return _titled(block, parts)
        if isinstance(parts, list):
            texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
            return _titled(block, "\n\n".join(texts))
        raise invalid_request(f"{where}.source.content: a string or a list of content blocks is required")
    if kind == "base64":
        if source.get("media_type") != PDF:
            raise invalid_request(f"{where}.source.media_type: base64 documents must be {PDF}")
        data = source.get("data")
        if not isinstance(data, str):
            raise invalid_request(f"{where}.source.data: base64 PDF data is required")
        return _titled(block, pdf_text(data, where))
    raise invalid_request(
        f"{where}.source.type: {kind!r} documents cannot reach a local model (send the PDF as base64, or its text)"
    )


def _titled(block: dict[str, Any], text: str) -> str:
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def pdf_text(data: str, where: str) -> str:
    """The text layer of a base64 PDF. Raises ApiError (400) for a PDF without one, or one that cannot be read."""
    text, bad_base64, why = _read_pdf(data)
    if bad_base64:
        raise invalid_request(f"{where}.source.data: not valid base64")
    if text is None:
        raise _cannot(where, why)
    return text


@functools.lru_cache(maxsize=8)
def _read_pdf(data: str) -> tuple[str | None, bool, str]:
    """(text, whether the data was not base64, why there is no text). Cached: Claude Code sends the whole
    history again every turn, and the same request is read twice on the way to an Anthropic-speaking backend."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None, True, ""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:  # pragma: no cover - pypdf is a dependency; a broken install still gets a clear answer
        return None, False, "pypdf is not installed (pip install pypdf)"
    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        log.warning("could not read a PDF document (%d bytes): %s", len(raw), type(exc).__name__)
        return None, False, "the PDF could not be read"
    if not any(page.strip() for page in pages):
        return None, False, "the PDF has no text layer (a scan?); this backend cannot see images of pages"
    return "\n\n".join(f"[page {i}]\n{page.strip()}" for i, page in enumerate(pages, 1) if page.strip()), False, ""


def _cannot(where: str, why: str) -> ApiError:
    return invalid_request(f"{where}: this PDF cannot be given to a local model: {why}")


def inline_documents(messages: Any) -> Any:
    """Anthropic `messages` with each `document` block (in a user turn or a tool_result) replaced by a text
    block of its text, for an Anthropic-speaking backend that ignores documents (llama-server drops them
    without a word). Messages without documents are returned as they are, so their bytes do not change.
    Raises ApiError (400) for a document without readable text."""
    if not isinstance(messages, list) or not any(
        _has_document(m.get("content")) for m in messages if isinstance(m, dict)
    ):
        return messages
    return [_inline_message(message, f"messages.{i}") for i, message in enumerate(messages)]


def _has_document(blocks: Any) -> bool:
    if not isinstance(blocks, list):
        return False
    return any(
        isinstance(b, dict)
        and (b.get("type") == "document" or (b.get("type") == "tool_result" and _has_document(b.get("content"))))
        for b in blocks
    )


def _inline_message(message: Any, where: str) -> Any:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    return {**message, "content": _inline_blocks(message["content"], f"{where}.content")}


def _inline_blocks(blocks: list[Any], where: str) -> list[Any]:
    out: list[Any] = []
    for j, block in enumerate(blocks):
        if isinstance(block, dict) and block.get("type") == "document":
            out.append({"type": "text", "text": document_text(block, f"{where}.{j}")})
        elif isinstance(block, dict) and block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            out.append({**block, "content": _inline_blocks(block["content"], f"{where}.{j}.content")})
        else:
            out.append(block)
    return out
