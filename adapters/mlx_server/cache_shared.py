"""Shared prefixes held once: a slot may keep only its own tokens' keys and values on top of a shared base.

Why: Claude Code's parallel subagents send one system prompt and tool list (thousands of tokens) and then
each its own task. Kept as plain mlx-lm caches, every subagent's slot holds its own copy of that prefix, so
8 subagents cost 8 prefixes of RAM. MLX arrays cannot share part of a buffer between two caches that keep
growing (a slice is a view of the whole buffer; writing into it copies), so sharing needs two pieces.

Structure (the simplest that gets there): a `Base` is the first `length` tokens' keys and values, one
contiguous pair of arrays per layer, immutable once made. A `SharedCache` is a base plus a `tail`, a plain
mlx-lm cache list holding the tokens after the base. Slots hold either a plain cache list or a
`SharedCache`; any number of slots point at one base, and the base's memory is counted once
(`SlotTable.nbytes`). The engine never sees a `SharedCache`: `materialize` concatenates base and tail into a
plain cache when a slot is handed out (one copy of the prefix, which mlx-lm's batch makes anyway when it
merges caches), and `share` splits a cache coming back into base and tail (one copy of the tail).

When a cache is split (`prompt_cache.SlotPromptCache._put`): it starts with a base another slot already
uses (the longest), or it shares at least `SHARE_MIN_TOKENS` with a plain slot, neither holding all of the
other: then that common prefix becomes a new base for both. A base is freed with the last slot using it.
Only where the base is at least half of each slot split on it (a tail no longer than its base): a main
conversation 40k tokens past a shared 15k-token prompt stays whole, since splitting it would save one copy
of the prompt but copy its 25k-token tail at every store and the whole sequence at every turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Shorter common prefixes are left in each slot: a base costs a copy on every use, worth it for a system prompt.
SHARE_MIN_TOKENS = 256


@dataclass(frozen=True, eq=False)
class Base:
    """The first `length` tokens' (keys, values) per layer; never written after it is made."""

    length: int
    layers: tuple[tuple[Any, Any], ...]
    nbytes: int


@dataclass(eq=False)
class SharedCache:
    base: Base
    tail: list[Any]  # mlx-lm KVCache layers holding the tokens after the base

    @property
    def length(self) -> int:
        return self.base.length + tail_length(self.tail)


def tail_length(tail: list[Any]) -> int:
    return int(tail[0].offset) if tail and tail[0].keys is not None else 0


def is_plain_kv(cache: Any) -> bool:
    from mlx_lm.models.cache import KVCache

    return isinstance(cache, list) and bool(cache) and all(type(layer) is KVCache for layer in cache)


def make_base(cache: list[Any], length: int) -> Base:
    """A base of a plain cache's first `length` tokens: copied, so the source's buffers can be freed."""
    import mlx.core as mx

    layers = tuple(
        (mx.contiguous(layer.keys[..., :length, :]), mx.contiguous(layer.values[..., :length, :])) for layer in cache
    )
    mx.eval(layers)
    return Base(length, layers, sum(int(k.nbytes) + int(v.nbytes) for k, v in layers))


def share(cache: list[Any], base: Base) -> SharedCache:
    """`cache` (plain, holding at least `base.length` tokens that start with the base's) as base plus tail."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    tail = []
    for layer in cache:
        kept = KVCache()  # type: ignore[no-untyped-call]
        end = int(layer.offset)
        if end > base.length:
            kept.keys = mx.contiguous(layer.keys[..., base.length : end, :])
            kept.values = mx.contiguous(layer.values[..., base.length : end, :])
            kept.offset = end - base.length
        tail.append(kept)
    mx.eval([(layer.keys, layer.values) for layer in tail if layer.keys is not None])
    return SharedCache(base, tail)


def materialize(shared: SharedCache, length: int | None = None) -> list[Any]:
    """A plain cache holding the first `length` tokens (all by default); shares nothing writable with `shared`."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    length = shared.length if length is None else length
    out = []
    for (keys, values), layer in zip(shared.base.layers, shared.tail, strict=True):
        plain = KVCache()  # type: ignore[no-untyped-call]
        extra = max(0, length - shared.base.length)
        if extra and layer.keys is not None:
            plain.keys = mx.concatenate([keys, layer.keys[..., :extra, :]], axis=2)
            plain.values = mx.concatenate([values, layer.values[..., :extra, :]], axis=2)
        else:
            plain.keys = mx.contiguous(keys[..., :length, :])
            plain.values = mx.contiguous(values[..., :length, :])
        plain.offset = min(length, shared.base.length + extra)
        out.append(plain)
    return out


def trim(shared: SharedCache, count: int) -> None:
    """Forget the last `count` tokens in place; reaching into the base turns the tail into the whole prefix."""
    from mlx_lm.models.cache import trim_prompt_cache

    held = tail_length(shared.tail)
    if count <= held:
        trim_prompt_cache(shared.tail, count)
        return
    # Rare (a fork inside the shared prefix that moves the slot): hold it as one plain tail on an empty base.
    shared.tail = materialize(shared, shared.length - count)
    shared.base = Base(0, tuple((k[..., :0, :], v[..., :0, :]) for k, v in shared.base.layers), 0)


def nbytes(shared: SharedCache) -> int:
    """The tail's bytes; the base is counted once by whoever adds up the slots."""
    total = 0
    for layer in shared.tail:
        if layer.keys is not None:
            total += int(layer.keys.nbytes) + int(layer.values.nbytes)
    return total
