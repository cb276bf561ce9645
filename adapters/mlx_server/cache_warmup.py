"""A model's prompt cache at load time: its saved slots restored, then the warmup prompt prefilled.

Both run on the generation thread before the model is reported ready (for the default model, before
`/health` says ready), so the first request already finds them.

The warmup prompt is what every conversation of the client starts with: a text file is the system
prompt; a JSON file is `{"messages": [...], "tools": [...]}` as a chat request would send them; a tools
file adds (OpenAI-shaped) tools. It is rendered with the model's chat template without a generation
prompt, so it is a token prefix of the client's real requests when the template renders the same text.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.mlx_server.cache_disk import model_fingerprint
from adapters.mlx_server.cache_mlx import prefill
from adapters.mlx_server.chat import render_chat
from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.pool import LoadedModel
from adapters.mlx_server.prompt_cache import PromptCacheStore, SlotPromptCache, cache_key

log = logging.getLogger("anyclaude.mlx_server")


@dataclass(frozen=True)
class WarmupPrompt:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


def read_warmup(prompt_file: Path | None, tools_file: Path | None) -> WarmupPrompt | None:
    """The warmup prompt from its files, or None when neither is given. Raises ValueError for bad files."""
    if prompt_file is None and tools_file is None:
        return None
    messages: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] | None = None
    try:
        if prompt_file is not None:
            text = prompt_file.read_text(encoding="utf-8")
            if prompt_file.suffix == ".json":
                body = json.loads(text)
                if not isinstance(body, dict) or not isinstance(body.get("messages", []), list):
                    raise ValueError('expected {"messages": [...], "tools": [...]}')
                messages, tools = list(body.get("messages", [])), body.get("tools")
            else:
                messages = [{"role": "system", "content": text}]
        if tools_file is not None:
            tools = json.loads(tools_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"warmup file: {exc}") from None
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise ValueError("warmup tools: expected a JSON list of tool objects")
    if not messages and not tools:
        raise ValueError("warmup file: nothing to prefill")
    return WarmupPrompt(messages, tools or None)


def prepare_model_cache(store: PromptCacheStore, loaded: LoadedModel, config: ServerConfig, *, warm: bool) -> None:
    """Restore `loaded`'s saved slots, then (when `warm`) prefill the warmup prompt. Generation thread."""
    if not isinstance(store, SlotPromptCache):
        return
    if config.cache_dir is not None:
        fingerprint = model_fingerprint(loaded.path, loaded.chat_template)
        store.restore(loaded.alias, loaded.model, config.cache_dir / fingerprint, fingerprint)
    warmup = read_warmup(config.warmup_file, config.warmup_tools) if warm else None
    if warmup is None:
        return
    started = time.perf_counter()
    tokens = render_chat(loaded, warmup.messages, warmup.tools, add_generation_prompt=False).tokens
    key = cache_key(loaded.alias)
    lease = store.fetch(key, loaded.model, tokens)
    reused = lease.reused
    prefill(loaded.model, lease.cache, tokens[reused:], config.prefill_step)
    store.store(lease, tokens, lease.cache)
    log.info(
        "prompt cache: warmup of %d tokens (%d reused) in %.2fs", len(tokens), reused, time.perf_counter() - started
    )
