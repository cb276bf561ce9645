"""Prompts from chat messages with the model's own chat template; token counts the same way.

The template comes from the model folder (`chat_template.jinja` or `tokenizer_config.json`), as the
tokenizer loaded it. `tools` are handed to the template, so a prompt with tools is what the model
was trained to read. Tokenizer calls take the model's lock (HF tokenizers fail when two threads
use one at once).

The server runs text-only models (mlx-lm): a message with an image, audio or file part is refused with a
clear error rather than rendered without it, which would have the model describe an image it never saw.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.mlx_server.pool import LoadedModel


@dataclass(frozen=True)
class Prompt:
    """Tokens to feed, and whether generation starts inside a reasoning block (`<think>` already open)."""

    tokens: list[int]
    starts_in_reasoning: bool = False


def render_chat(
    loaded: LoadedModel,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    template_kwargs: dict[str, Any] | None = None,
) -> Prompt:
    """Render and tokenize a chat. Raises ValueError when the template rejects the messages."""
    tokenizer = loaded.tokenizer
    prepared = [_template_message(m) for m in messages]  # raises for images before anything is rendered
    with loaded.tokenizer_lock:
        if getattr(tokenizer, "has_chat_template", False):
            try:
                text = tokenizer.apply_chat_template(
                    prepared,
                    tools=list(tools) if tools else None,
                    add_generation_prompt=add_generation_prompt,
                    tokenize=False,
                    **(template_kwargs or {}),
                )
            except Exception as exc:  # jinja raises its own types; all mean "these messages do not fit"
                raise ValueError(f"the chat template rejected the messages: {exc}") from exc
        else:
            text = _plain_transcript(prepared, add_generation_prompt)
        tokens = list(tokenizer.encode(text, add_special_tokens=False))
    return Prompt(tokens, _opens_reasoning(loaded, text))


def encode_text(loaded: LoadedModel, text: str) -> list[int]:
    """Tokens of a plain prompt, with the special tokens (BOS) the tokenizer adds by default."""
    with loaded.tokenizer_lock:
        return list(loaded.tokenizer.encode(text))


# OpenAI content-part types a text-only model cannot read, and what to call them in the error.
_NOT_TEXT = {
    "image_url": "images",
    "input_image": "images",
    "image": "images",
    "input_audio": "audio",
    "audio": "audio",
    "file": "files",
    "input_file": "files",
}


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """OpenAI message -> what chat templates expect: text content as one string, tool arguments as objects.

    Raises ValueError for content this text-only server cannot read (images, audio, files).
    """
    out = dict(message)
    content = out.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in _NOT_TEXT:
                raise ValueError(f"this model does not accept {_NOT_TEXT[kind]}: it reads text only")
        out["content"] = "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    elif content is None:
        out["content"] = ""
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_template_tool_call(call) for call in calls]
    return out


def _template_tool_call(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        # Not JSON: left as text, and the template shows it as written.
        with contextlib.suppress(json.JSONDecodeError):
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
    return {**call, "function": function}


def _plain_transcript(messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> str:
    """For a model folder without a chat template: `role: content` lines."""
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    if add_generation_prompt:
        lines.append("assistant:")
    return "\n".join(lines)


def _opens_reasoning(loaded: LoadedModel, text: str) -> bool:
    """True when the template ended the prompt with an open `<think>` (the model continues inside it)."""
    tokenizer = loaded.tokenizer
    start = getattr(tokenizer, "think_start", None)
    end = getattr(tokenizer, "think_end", None)
    if not getattr(tokenizer, "has_thinking", False) or not isinstance(start, str):
        return False
    tail = text.rstrip()
    return tail.endswith(start) and not (isinstance(end, str) and tail.endswith(end))
