"""Cache hygiene: remove what changes between conversations from the front of the prompt.

Claude Code writes `x-anthropic-billing-header: cc_version=…; cc_entrypoint=…;` as the first system
block, with a suffix derived from each conversation's first prompt. It sits before the ~20k-token
system prompt and tool list, so left in place every new conversation and every subagent misses a
backend's prefix cache and pays a full cold prefill. Nothing downstream of the real API reads it.
Claude Code can also put the line in a `role: system` message inside the conversation; it is stripped
there too.
"""

from __future__ import annotations

from typing import Any

BILLING_PREFIX = "x-anthropic-billing-header:"


def _strip_lines(text: str) -> str:
    if BILLING_PREFIX not in text:
        return text
    kept = [line for line in text.split("\n") if not line.lstrip().startswith(BILLING_PREFIX)]
    return "\n".join(kept).strip("\n")


def strip_billing_header(system: Any) -> Any:
    """`system` (a string or a list of blocks) without the billing line; other values unchanged.

    A block left empty by the strip is removed entirely, so the prompt does not start with a blank line.
    """
    if isinstance(system, str):
        return _strip_lines(system)
    if not isinstance(system, list):
        return system
    cleaned: list[Any] = []
    for block in system:
        if isinstance(block, dict) and isinstance(block.get("text"), str) and BILLING_PREFIX in block["text"]:
            text = _strip_lines(block["text"])
            if not text.strip():
                continue
            block = {**block, "text": text}
        cleaned.append(block)
    return cleaned


def _strip_message(message: Any) -> Any:
    if isinstance(message, dict) and message.get("role") == "system" and "content" in message:
        content = strip_billing_header(message["content"])
        if content != message["content"]:
            return {**message, "content": content}
    return message


def clean_anthropic_body(body: dict[str, Any], model: str | None, strip: bool = True) -> dict[str, Any]:
    """The body relayed to a local Anthropic-speaking backend: billing line stripped, model mapped."""
    out = dict(body)
    if strip and "system" in out:
        out["system"] = strip_billing_header(out["system"])
    if strip and isinstance(out.get("messages"), list):
        out["messages"] = [_strip_message(message) for message in out["messages"]]
    if model is not None:
        out["model"] = model
    return out
