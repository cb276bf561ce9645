"""Where the engine gets the KV cache it starts from, and gives it back after a generation.

The engine asks one object for a `Lease` (a cache holding the first `reused` tokens of the prompt) before
prefilling and hands the resulting cache back with that lease when it is done (`store`), or gives the lease
back unused (`release`). `FreshPromptCache` keeps nothing. `SlotPromptCache` keeps several slots and reuses the longest
token prefix (the rules for which slot is moved or copied, and when a cache is trimmed, are in
`cache_slots.py`), and saves its slots to disk (`cache_disk.py`).

What a stored cache holds: exactly the tokens whose keys and values went through the model — the prompt
plus the generated tokens that were fed back. The engine counts those (`generation.FedTokens`) rather
than assuming "prompt + generated": the last sampled token is usually never fed, and a cancelled
request may have prefilled only part of its prompt.

Keys: a slot is only reused under the same key, `cache_key(alias, namespace)`: the model's alias plus
the request's chat-template settings, so slots are never shared across models or template settings.

Persistence policy: `flush` writes every slot with unsaved tokens (and removes files of evicted slots).
Its callers choose when: the engine once it has been idle for `engine.IDLE_SAVE_S` after a request (a
client reading an answer or running a tool), the runtime once `persist_interval` seconds pass without any
save (a long busy stretch), and the engine at shutdown (`final`: waits for the writes). A server killed
with SIGKILL therefore loses only requests of its last busy stretch, at most `persist_interval` seconds
of them. Frozen copies are views made on the generation thread; the files are written by a background
thread. Whole slots are rewritten, so a long conversation costs one file write per pause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapters.mlx_server.cache_disk import DiskWriter, SavedSlot, load_slots
from adapters.mlx_server.cache_mlx import MlxCacheOps, fresh_cache, frozen_copy, persistable
from adapters.mlx_server.cache_slots import ANONYMOUS, CacheOps, Lease, Owner, Slot, SlotTable, describe

log = logging.getLogger("anyclaude.mlx_server")

# A per-layer list of mlx-lm cache objects (`mlx_lm.models.cache.make_prompt_cache`).
KVCache = list[Any]

# Seconds a shutdown waits for the writer (inside the engine's 10 s join); files stay whole if it runs out.
FINAL_WRITE_TIMEOUT_S = 8.0
_NAMESPACE_SEPARATOR = "\n"


def cache_key(alias: str, namespace: str = "") -> str:
    """The key slots are matched under: a model alias and, if any, its chat-template settings."""
    return f"{alias}{_NAMESPACE_SEPARATOR}{namespace}" if namespace else alias


def _split_key(key: str) -> tuple[str, str]:
    alias, _, namespace = key.partition(_NAMESPACE_SEPARATOR)
    return alias, namespace


class PromptCacheStore(Protocol):
    """Supplies a starting KV cache for a token sequence and takes caches back.

    `fetch`, `store`, `checkpoint` and `flush` run on the generation thread (MLX arrays are bound to its
    stream); `describe` and `reusable` may be called from any thread.
    """

    def fetch(
        self, model_key: str, model: Any, tokens: Sequence[int], *, owner: Owner = ANONYMOUS, borrow: bool = False
    ) -> Lease[KVCache]:
        """A lease whose cache holds the first `lease.reused` tokens of `tokens`.

        `reused` is always less than `len(tokens)`: at least one token must be fed to get logits. With `borrow`,
        the caller only reads the cache (mlx-lm's batch copies it) and the slot it came from stays usable.
        """
        ...

    def store(self, lease: Lease[KVCache], tokens: Sequence[int], cache: KVCache) -> None:
        """Offer the cache after generation; it holds exactly `tokens` (prompt plus generated tokens fed)."""
        ...

    def release(self, lease: Lease[KVCache]) -> None:
        """Give a lease back without a result (nothing new was computed)."""
        ...

    def checkpoint(self, lease: Lease[KVCache], tokens: Sequence[int], cache: KVCache) -> None:
        """Keep `cache` (holding `tokens`, a prompt just prefilled) for other requests while `lease` runs on."""
        ...

    def reusable(self, model_key: str, tokens: Sequence[int]) -> int:
        """How many of `tokens` a fetch would reuse now."""
        ...

    def drop(self, model_key: str) -> None:
        """Forget every cache of a model alias (it was evicted from memory)."""
        ...

    def flush(self, final: bool = False) -> None:
        """Persist what the policy says is due now; `final` (shutdown) writes everything and waits."""
        ...

    @property
    def flushed_at(self) -> float:
        """`time.monotonic()` when `flush` last ran (0.0 before the first)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Slots and totals for `GET /v1/cache`."""
        ...


class FreshPromptCache:
    """The store that reuses nothing: a new cache per request, `reused` always 0."""

    def fetch(
        self, model_key: str, model: Any, tokens: Sequence[int], *, owner: Owner = ANONYMOUS, borrow: bool = False
    ) -> Lease[KVCache]:
        return Lease(fresh_cache(model), 0, len(tokens), model_key, owner)

    def store(self, lease: Lease[KVCache], tokens: Sequence[int], cache: KVCache) -> None:
        return None

    def release(self, lease: Lease[KVCache]) -> None:
        return None

    def checkpoint(self, lease: Lease[KVCache], tokens: Sequence[int], cache: KVCache) -> None:
        return None

    def reusable(self, model_key: str, tokens: Sequence[int]) -> int:
        return 0

    def drop(self, model_key: str) -> None:
        return None

    def flush(self, final: bool = False) -> None:
        return None

    @property
    def flushed_at(self) -> float:
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {"enabled": False, "slots": [], "totals": {"slots": 0, "bytes": 0, "hits": 0, "misses": 0}}


@dataclass
class _Binding:
    """Where one model alias's slots are saved."""

    directory: Path
    fingerprint: str
    files: set[str]


class SlotPromptCache:
    """Longest-prefix reuse over `slots` slots within `max_bytes`, saved under `persist_interval` rules.

    Args:
        slots: how many caches are kept (all models together).
        max_bytes: memory the kept caches may take (the newest may exceed it alone).
        persist_interval: the runtime's timer period for `flush` (reported by `describe`).
        ops: cache operations (mlx-lm's by default; fakes in tests).
    """

    def __init__(
        self,
        slots: int,
        max_bytes: int,
        persist_interval: float = 60.0,
        ops: CacheOps[KVCache] | None = None,
    ) -> None:
        self._ops: CacheOps[KVCache] = ops or MlxCacheOps()
        self._table: SlotTable[KVCache] = SlotTable(self._ops, slots, max_bytes)
        self._persist_interval = persist_interval
        self._bindings: dict[str, _Binding] = {}
        self._writer = DiskWriter()
        # `describe` reads from the event loop while the generation thread changes the table.
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._reused_tokens = 0
        self._prompt_tokens = 0
        self._flushed_at = 0.0

    # ---- the engine's seam ----

    def fetch(
        self, model_key: str, model: Any, tokens: Sequence[int], *, owner: Owner = ANONYMOUS, borrow: bool = False
    ) -> Lease[KVCache]:
        with self._lock:
            lease = self._table.take(model_key, tokens, lambda: fresh_cache(model), borrow=borrow, owner=owner)
            self._hits += lease.reused > 0
            self._misses += lease.reused == 0
            self._reused_tokens += lease.reused
            self._prompt_tokens += len(tokens)
        return lease

    def store(self, lease: Lease[KVCache], tokens: Sequence[int], cache: KVCache) -> None:
        self._put(lease.key, tokens, cache, lease, lease.owner)

    def release(self, lease: Lease[KVCache]) -> None:
        if lease.moved is not None:
            # A moved slot left the table with the lease: put it back as it was (trimmed, so it holds the
            # reused prefix only).
            self._put(lease.key, lease.moved.tokens[: lease.reused], lease.cache, lease, lease.owner)

    def checkpoint(self, lease: Lease[KVCache], tokens: Sequence[int], cache: KVCache) -> None:
        self._put(lease.key, tokens, cache, None, lease.owner)

    def reusable(self, model_key: str, tokens: Sequence[int]) -> int:
        with self._lock:
            return self._table.reusable(model_key, tokens)

    def _put(self, key: str, tokens: Sequence[int], cache: KVCache, lease: Lease[KVCache] | None, owner: Owner) -> None:
        if not tokens or self._table.max_slots <= 0:
            return
        with self._lock:
            evicted = self._table.put(key, tokens, cache, lease, owner)
        for slot in evicted:
            log.debug("prompt cache: evicted slot %s (%d tokens, %d bytes)", slot.id, len(slot.tokens), slot.nbytes)

    def drop(self, model_key: str) -> None:
        alias, _ = _split_key(model_key)
        self._persist(alias)
        with self._lock:
            self._table.drop(lambda key: _split_key(key)[0] == alias)

    def flush(self, final: bool = False) -> None:
        self._flushed_at = time.monotonic()
        for alias in list(self._bindings):
            self._persist(alias)
        if final and not self._writer.wait(FINAL_WRITE_TIMEOUT_S):
            log.warning("prompt cache: writes still running after %.0fs; the last may be lost", FINAL_WRITE_TIMEOUT_S)

    @property
    def flushed_at(self) -> float:
        return self._flushed_at

    def describe(self) -> dict[str, Any]:
        with self._lock:
            slots = self._table.slots
            totals = {
                "slots": len(slots),
                "bytes": sum(slot.nbytes for slot in slots),
                "max_slots": self._table.max_slots,
                "max_bytes": self._table.max_bytes,
                "hits": self._hits,
                "misses": self._misses,
                "reused_tokens": self._reused_tokens,
                "prompt_tokens": self._prompt_tokens,
            }
            persisted = {alias: len(binding.files) for alias, binding in self._bindings.items()}
            bound = [s for s in slots if _split_key(s.key)[0] in self._bindings and persistable(s.cache)]
            unsaved = sum(len(s.tokens) - s.saved_length for s in bound)
        return {
            "enabled": True,
            "slots": describe(slots),
            "totals": totals,
            "persistence": {
                "files": persisted,
                "unsaved_tokens": unsaved,
                "writing": not self._writer.idle,
                "interval_s": self._persist_interval,
                "error": self._writer.failing,
                "failed_writes": self._writer.failures,
            },
        }

    # ---- persistence ----

    def restore(self, alias: str, model: Any, directory: Path, fingerprint: str) -> int:
        """Bind `alias` to its folder and adopt the slots saved there. Generation thread; returns slots adopted."""
        import mlx.core as mx

        binding = _Binding(directory, fingerprint, set())
        adopted = 0
        for saved in load_slots(directory, fingerprint, len(fresh_cache(model))):
            mx.eval([layer.state for layer in saved.cache])  # read the file now, not inside the first request
            slot: Slot[KVCache] = Slot(
                cache_key(alias, saved.namespace),
                saved.tokens,
                saved.cache,
                saved.prompt_length,
                self._ops.nbytes(saved.cache),
                id=saved.id,
                hits=saved.hits,
                saved_length=len(saved.tokens),
                owner=Owner(saved.session, saved.agent),
            )
            with self._lock:
                if not self._table.adopt(slot):
                    break
            binding.files.add(saved.id)
            adopted += 1
        self._bindings[alias] = binding
        if adopted:
            log.info("prompt cache: restored %d slot(s) of %s from %s", adopted, alias, directory)
        return adopted

    def _persist(self, alias: str) -> None:
        binding = self._bindings.get(alias)
        if binding is None:
            return
        failed = self._writer.take_failed(binding.directory)
        with self._lock:
            slots = [s for s in self._table.slots if _split_key(s.key)[0] == alias and persistable(s.cache)]
            for slot in slots:
                if slot.id in failed:
                    slot.saved_length = 0  # its file was never written: write it whole next time
        keep = {slot.id for slot in slots}
        dirty = [slot for slot in slots if slot.saved_length < len(slot.tokens)]
        if not dirty and keep == binding.files:
            return
        writes = [_saved(slot) for slot in dirty]
        self._writer.submit(binding.directory, binding.fingerprint, writes, keep)
        with self._lock:
            for slot in dirty:
                slot.saved_length = len(slot.tokens)
        binding.files = keep
        log.debug("prompt cache: writing %d slot(s) of %s", len(writes), alias)


def _saved(slot: Slot[KVCache]) -> SavedSlot:
    namespace = _split_key(slot.key)[1]
    cache = frozen_copy(slot.cache)
    return SavedSlot(
        slot.id,
        namespace,
        list(slot.tokens),
        slot.prompt_length,
        slot.hits,
        cache,
        slot.owner.session,
        slot.owner.agent,
    )


def build_prompt_cache(slots: int, max_bytes: int, persist_interval: float) -> PromptCacheStore:
    """The store a server uses: `FreshPromptCache` when `slots` is 0, else a `SlotPromptCache`."""
    if slots <= 0:
        return FreshPromptCache()
    return SlotPromptCache(slots, max_bytes, persist_interval)
