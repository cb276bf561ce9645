"""The models the server can serve: which are loaded, which load next, which go under memory pressure.

Loading runs on the generation thread only (`Engine.call`): MLX arrays and streams belong to the
thread that made them, and a load beside a running generation would double peak memory. Reads
(`loaded`, `snapshot`) are safe from any thread; they take the pool's lock.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from adapters.capabilities import ToolSupport, tool_support
from adapters.contracts import is_default_model
from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.heads import LastLogits, last_logits
from adapters.mlx_server.prompt_cache import PromptCacheStore

log = logging.getLogger("anyclaude.mlx_server")

_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", "n_ctx", "max_seq_len")


class UnknownModelError(LookupError):
    """A request named a model this server does not serve."""

    def __init__(self, requested: str, known: list[str]) -> None:
        super().__init__(f"The model '{requested}' does not exist. Available models: {', '.join(known)}")
        self.requested = requested
        self.known = known


@dataclass
class LoadedModel:
    """One model in memory with what requests need to know about it."""

    alias: str
    path: Path
    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    context_length: int | None
    model_type: str | None
    nbytes: int
    vocab_size: int
    # Logits of the last input position (see heads.py); None: the model's own call.
    last_logits: LastLogits | None = None
    # Why requests for this model cannot join a batch (they run one at a time), or None when they can.
    batching: str | None = None
    # HF tokenizers are not safe to use from two threads at once ("Already borrowed").
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None


class ModelPool:
    """Aliases to model folders, with at most `memory_limit_bytes` of weights loaded (LRU eviction)."""

    def __init__(self, config: ServerConfig, paths: dict[str, Path], cache_store: PromptCacheStore) -> None:
        self._config = config
        self._paths = paths
        self._cache_store = cache_store
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._tool_support: dict[str, ToolSupport] = {}

    @property
    def default_alias(self) -> str:
        return self._config.default_alias

    @property
    def aliases(self) -> list[str]:
        return [spec.alias for spec in self._config.models]

    def resolve_alias(self, requested: str | None) -> str:
        """The alias a request means: none or any `claude-*` id is the default. Raises UnknownModelError."""
        if requested is None or is_default_model(requested) or requested == self.default_alias:
            return self.default_alias
        if requested in self._paths:
            return requested
        for alias, path in self._paths.items():
            if requested in (str(path), next(s.source for s in self._config.models if s.alias == alias)):
                return alias
        raise UnknownModelError(requested, self.aliases)

    def loaded(self, alias: str) -> LoadedModel | None:
        """The model if it is in memory (marking it recently used), else None."""
        with self._lock:
            found = self._loaded.get(alias)
            if found is not None:
                self._loaded.move_to_end(alias)
            return found

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            loaded = dict(self._loaded)
        return [
            {
                "id": alias,
                "path": str(self._paths[alias]),
                "loaded": alias in loaded,
                "bytes": loaded[alias].nbytes if alias in loaded else None,
                "context_length": loaded[alias].context_length if alias in loaded else self._config.context_length,
                "default": alias == self.default_alias,
                "batching": self._batching(loaded.get(alias)),
                "tools": self._tools(alias),
            }
            for alias in self.aliases
        ]

    def _tools(self, alias: str) -> dict[str, Any]:
        """Whether the model can call tools (its chat template renders them), from its files: read once."""
        found = self._tool_support.get(alias)
        if found is None:
            found = self._tool_support[alias] = tool_support(str(self._paths[alias]))
        return {"can_call": found.can_call, "why": found.why}

    def _batching(self, loaded: LoadedModel | None) -> dict[str, Any] | None:
        """Whether the model's requests batch (None until it is loaded), and the limits or the reason."""
        if loaded is None:
            return None
        if loaded.batching is not None:
            return {"enabled": False, "reason": loaded.batching}
        config = self._config
        return {
            "enabled": True,
            "decode_concurrency": config.decode_concurrency,
            "prefill_concurrency": config.prefill_concurrency,
        }

    def load(self, alias: str) -> LoadedModel:
        """Load `alias` unless it is in memory, evicting least recently used models to fit. Generation thread only."""
        found = self.loaded(alias)
        if found is not None:
            return found
        path = self._paths[alias]
        self._make_room(estimate_bytes(path))
        started = time.perf_counter()
        from mlx_lm.utils import load as mlx_load

        loaded = mlx_load(str(path), return_config=True)
        model, tokenizer, model_config = cast(tuple[Any, Any, dict[str, Any]], loaded)
        logits, shortcut = last_logits(model)
        entry = LoadedModel(
            alias=alias,
            path=path,
            model=model,
            tokenizer=tokenizer,
            context_length=self._config.context_length or context_length_of(model_config),
            model_type=model_config.get("model_type"),
            nbytes=parameter_bytes(model),
            vocab_size=int(model_config.get("vocab_size") or len(tokenizer)),
            last_logits=logits,
            batching=unbatchable_reason(model),
        )
        with self._lock:
            self._loaded[alias] = entry
        log.info(
            "loaded model %s from %s in %.2fs (%.1f MB, context %s, logits %s)",
            alias,
            path,
            time.perf_counter() - started,
            entry.nbytes / 1e6,
            entry.context_length,
            "of the last position only" if shortcut else "of every position (the model's own call)",
        )
        if entry.batching is None:
            log.info(
                "batching on for %s: up to %d requests generate together, %d read their prompts together",
                alias,
                self._config.decode_concurrency,
                self._config.prefill_concurrency,
            )
        else:
            log.warning("batching off for %s: %s; its requests run one at a time", alias, entry.batching)
        return entry

    def unload_all(self) -> None:
        with self._lock:
            aliases = list(self._loaded)
            self._loaded.clear()
        for alias in aliases:
            self._cache_store.drop(alias)

    def _make_room(self, needed: int) -> None:
        budget = self._config.memory_limit_bytes
        if budget is None:
            return
        evicted = False
        with self._lock:
            while self._loaded and sum(m.nbytes for m in self._loaded.values()) + needed > budget:
                alias, _ = self._loaded.popitem(last=False)
                self._cache_store.drop(alias)
                log.info("evicted model %s to stay under the memory limit", alias)
                evicted = True
        if evicted:
            import mlx.core as mx

            # The evicted weights are only freed once no array refers to them; then MLX may reuse the buffers.
            gc.collect()
            mx.clear_cache()


def unbatchable_reason(model: Any) -> str | None:
    """Why `model`'s requests cannot share mlx-lm's batch, or None: each layer's cache must merge into one."""
    from mlx_lm.models.cache import make_prompt_cache

    for layer in make_prompt_cache(model):
        if not hasattr(layer, "merge"):
            return f"its {type(layer).__name__} cannot be merged into a batch"
    return None


def context_length_of(model_config: dict[str, Any]) -> int | None:
    for key in _CONTEXT_KEYS:
        value = model_config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    text_config = model_config.get("text_config")
    return context_length_of(text_config) if isinstance(text_config, dict) else None


def estimate_bytes(path: Path) -> int:
    """Weights on disk: a fair guess of the memory a model takes before loading it."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def parameter_bytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    leaves = cast(list[tuple[str, Any]], tree_flatten(model.parameters()))
    return sum(int(value.nbytes) for _, value in leaves)
