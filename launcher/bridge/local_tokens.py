"""Prompt sizes counted with a local model folder's own tokenizer, for backends that serve a folder
and have no count endpoint (mlx_lm.server, MLX-Textgen, a server script).

The tokenizer is loaded on first use, once per folder, and every call runs on a worker thread: loading
takes ~1 s (transformers' import) and counting a 20k-token prompt tens of milliseconds, neither of
which may stall the event loop that streams replies. The prompt is rendered with the folder's chat
template, tools included, as the server renders it; a template that rejects the messages is counted
as plain text (the contents without the template's markup), a close undercount.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("anyclaude.bridge")

_loaded: dict[str, Any] = {}  # folder -> tokenizer, or None when it cannot be loaded
_lock = threading.Lock()


def _tokenizer(folder: str) -> Any:
    with _lock:  # two first requests must not both load it
        if folder not in _loaded:
            _loaded[folder] = _load(folder)
        return _loaded[folder]


def _load(folder: str) -> Any:
    # Its import prints advice (no PyTorch) on stderr, which is Claude Code's terminal while it runs.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers import AutoTokenizer  # ~1 s: only when a prompt needs counting

        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # a broken folder must not fail requests: the estimate answers instead
        log.warning("cannot load the tokenizer of %s (%s); prompt sizes are estimates", folder, exc)
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    except Exception:
        return None


def count(folder: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int | None:
    """The prompt's tokens as the server would feed them to the model; None when no tokenizer loads.

    Blocking: call it on a worker thread.
    """
    tokenizer = _tokenizer(folder)
    if tokenizer is None:
        return None
    with _lock:  # HF tokenizers are not safe to call from two threads at once
        if getattr(tokenizer, "chat_template", None):
            try:
                rendered = tokenizer.apply_chat_template(
                    [_plain(m) for m in messages], tools=tools or None, add_generation_prompt=True, tokenize=True
                )
                ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
                return len(ids)
            except Exception as exc:  # the template's own checks (roles, tool-call shapes)
                log.debug("the chat template of %s rejected the prompt (%s); counting its text", folder, exc)
        text = flatten(messages, tools)
        encoded = tokenizer.encode(text)
        return len(encoded.ids if hasattr(encoded, "ids") else encoded)


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """A message with list content joined into text and tool-call arguments as objects, the shapes
    most chat templates read."""
    out = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        out["content"] = "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_call(c) for c in calls]
    return out


def _call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            function["arguments"] = json.loads(arguments)
    return {**call, "function": function}


def flatten(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """The prompt's contents as plain text: message texts, tool calls, tool schemas."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        for call in message.get("tool_calls") or ():
            parts.append(call["function"]["name"] + call["function"]["arguments"])
    if tools:
        parts.append(json.dumps(tools, separators=(",", ":")))
    return "\n".join(parts)
