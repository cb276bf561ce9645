"""Where the engine gets the KV cache it starts from, and gives it back after a generation.

The engine asks one object for `(cache, reused)` before prefilling and hands the cache back when it
is done; a store that keeps caches (longest-prefix reuse, several slots, on disk) only has to
implement the same two methods. `FreshPromptCache` keeps nothing: every request starts empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

# A per-layer list of mlx-lm cache objects (`mlx_lm.models.cache.make_prompt_cache`).
KVCache = list[Any]


class PromptCacheStore(Protocol):
    """Supplies a starting KV cache for a token sequence and takes caches back.

    Both methods run on the generation thread (MLX arrays are bound to the thread's stream).
    """

    def fetch(self, model_key: str, model: Any, tokens: Sequence[int]) -> tuple[KVCache, int]:
        """A cache holding the first `reused` tokens of `tokens`, and `reused`.

        `reused` is always less than `len(tokens)`: at least one token must be fed to get logits.
        """
        ...

    def store(self, model_key: str, tokens: Sequence[int], cache: KVCache) -> None:
        """Offer the cache after generation; it now holds `tokens` (prompt plus generated)."""
        ...

    def drop(self, model_key: str) -> None:
        """Forget every cache of a model (it was evicted from memory)."""
        ...


class FreshPromptCache:
    """The store that reuses nothing: a new cache per request, `reused` always 0."""

    def fetch(self, model_key: str, model: Any, tokens: Sequence[int]) -> tuple[KVCache, int]:
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(model), 0

    def store(self, model_key: str, tokens: Sequence[int], cache: KVCache) -> None:
        return None

    def drop(self, model_key: str) -> None:
        return None
