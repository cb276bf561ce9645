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

Disk tier (`cache_tier.py`): with a folder bound and a disk budget, a slot pushed out of the RAM budget is
not lost: its file stays (written now if it was behind) and it is listed as a disk slot. `fetch` loads the
disk slot sharing the longest prefix back into RAM when that beats computing the tokens it would save; the
loaded slot keeps its id, so its file is again the mirror of a RAM slot. Folder bookkeeping: a model's folder
holds exactly the files of its RAM slots and of its disk slots (`_keep`); every other file goes at the next save.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapters.mlx_server.cache_disk import SUFFIX, DiskWriter, SavedSlot, load_slots, read_slot
from adapters.mlx_server.cache_mlx import MlxCacheOps, fresh_cache, frozen_copy, persistable, prefill
from adapters.mlx_server.cache_shared import (
    SHARE_MIN_TOKENS,
    Base,
    SharedCache,
    is_plain_kv,
    make_base,
    materialize,
    share,
)
from adapters.mlx_server.cache_slots import (
    ANONYMOUS,
    CacheOps,
    Lease,
    Owner,
    Slot,
    SlotTable,
    common_prefix,
    describe,
)
from adapters.mlx_server.cache_tier import DiskSlot, DiskTier

log = logging.getLogger("anyclaude.mlx_server")

# A per-layer list of mlx-lm cache objects (`mlx_lm.models.cache.make_prompt_cache`); inside the slot table
# also a `cache_shared.SharedCache` (leases and the engine only ever see the list).
KVCache = Any

# Seconds a shutdown waits for the writer (inside the engine's 10 s join); files stay whole if it runs out.
FINAL_WRITE_TIMEOUT_S = 8.0
# Seconds a load from the disk tier waits for a write still running (the slot it wants may be in it).
LOAD_WAIT_S = 5.0
# Prompt tokens of the timed prefill that measures a model's compute rate (once, when its folder is bound),
# after a short untimed one (the first call of a model pays for kernel set-up and page faults).
PROBE_TOKENS = 128
_PROBE_WARM_TOKENS = 8
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
        disk_bytes: the disk tier's budget (0: slots evicted from RAM are dropped); used once a folder is bound.
    """

    def __init__(
        self,
        slots: int,
        max_bytes: int,
        persist_interval: float = 60.0,
        ops: CacheOps[KVCache] | None = None,
        disk_bytes: int = 0,
    ) -> None:
        self._ops: CacheOps[KVCache] = ops or MlxCacheOps()
        self._table: SlotTable[KVCache] = SlotTable(self._ops, slots, max_bytes)
        self._disk = DiskTier(disk_bytes)
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
        loaded = self._from_disk(model_key, model, tokens) if self._disk.max_bytes > 0 else None
        with self._lock:
            lease = self._table.take(model_key, tokens, lambda: fresh_cache(model), borrow=borrow, owner=owner)
            source = lease.moved.id if lease.moved is not None else lease.copied_from
            if lease.reused > 0:
                if loaded is not None and source == loaded:
                    self._disk.stats.disk_hits += 1
                else:
                    self._disk.stats.ram_hits += 1
            self._hits += lease.reused > 0
            self._misses += lease.reused == 0
            self._reused_tokens += lease.reused
            self._prompt_tokens += len(tokens)
        if isinstance(lease.cache, SharedCache):  # a copy, outside the lock: `describe` runs on the event loop
            lease.cache = materialize(lease.cache)  # the engine only ever gets plain mlx-lm caches
            if lease.moved is not None:
                lease.moved.cache = lease.cache  # the moved slot's tail is not kept twice while it runs
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
            found = self._disk.best(model_key, tokens) if tokens else None
            return max(self._table.reusable(model_key, tokens), found[1] if found else 0)

    def _put(self, key: str, tokens: Sequence[int], cache: KVCache, lease: Lease[KVCache] | None, owner: Owner) -> None:
        if not tokens or self._table.max_slots <= 0:
            return
        cache = self._shared(key, tokens, cache)
        with self._lock:
            evicted = self._table.put(key, tokens, cache, lease, owner)
            self._disk.covered_by(key, tokens)
        # A slot the new one holds all of is gone for good; the others were pushed out by the budget.
        pushed = [s for s in evicted if not (s.key == key and common_prefix(s.tokens, tokens) == len(s.tokens))]
        self._spill(pushed)

    def drop(self, model_key: str) -> None:
        alias, _ = _split_key(model_key)
        self._persist(alias)
        with self._lock:
            dropped = self._table.drop(lambda key: _split_key(key)[0] == alias)
        self._spill(dropped)  # just written: they stay on disk for the model's next load

    def _shared(self, key: str, tokens: Sequence[int], cache: KVCache) -> KVCache:
        """`cache` as a tail on a shared base when it shares a long prefix with RAM slots (`cache_shared.py`).

        Generation thread (the table's only writer), without the lock: the copies take a while and `describe`
        runs on the event loop. Only replaces slots' `cache` attributes, never mutates a cache in place: a
        running batch may still be copying the plain cache a slot held.
        """
        if len(tokens) <= SHARE_MIN_TOKENS or not is_plain_kv(cache):
            return cache
        slots = [s for s in self._table.slots if s.key == key]
        base: Base | None = None
        for slot in slots:
            held = slot.cache.base if isinstance(slot.cache, SharedCache) else None
            if held is None or not SHARE_MIN_TOKENS <= held.length < len(tokens) <= 2 * held.length:
                continue
            if common_prefix(slot.tokens, tokens) >= held.length and (base is None or held.length > base.length):
                base = held
        if base is not None:
            return share(cache, base)
        for slot in reversed(slots):  # most recently used first
            shared = common_prefix(slot.tokens, tokens)
            both = min(len(slot.tokens), len(tokens))
            if is_plain_kv(slot.cache) and SHARE_MIN_TOKENS <= shared < both and _max_tail(slot, tokens) <= shared:
                base = make_base(slot.cache, shared)
                split = share(slot.cache, base)
                with self._lock:
                    slot.cache, slot.nbytes = split, self._ops.nbytes(split)
                log.debug("prompt cache: %d tokens of slot %s now a shared prefix", shared, slot.id)
                return share(cache, base)
        return cache

    # ---- the disk tier ----

    def _spill(self, evicted: Sequence[Slot[KVCache]]) -> None:
        """List slots pushed out of RAM as disk slots, writing those whose file is behind. Generation thread."""
        aliases: set[str] = set()
        for slot in evicted:
            alias = _split_key(slot.key)[0]
            binding = self._bindings.get(alias)
            spill = binding is not None and self._disk.max_bytes > 0 and persistable(slot.cache)
            log.debug(
                "prompt cache: evicted slot %s (%d tokens, %d bytes)%s",
                slot.id,
                len(slot.tokens),
                slot.nbytes,
                " to disk" if spill else "",
            )
            if binding is None or not spill:
                continue
            disk_slot = DiskSlot(
                slot.id,
                slot.key,
                list(slot.tokens),
                slot.prompt_length,
                slot.hits,
                slot.owner,
                slot.nbytes + (slot.cache.base.nbytes if isinstance(slot.cache, SharedCache) else 0),
                time.time(),
            )
            writes = [_saved(slot)] if slot.saved_length < len(slot.tokens) else []
            with self._lock:
                self._disk.add(disk_slot)
                self._disk.stats.spills += 1
            if writes:
                self._writer.submit(binding.directory, binding.fingerprint, writes, self._keep(alias))
                binding.files.add(slot.id)
            aliases.add(alias)
        if aliases:
            with self._lock:
                on_disk = sum(s.nbytes for s in self._table.slots if s.saved_length > 0)
                gone = self._disk.fit(on_disk)
            for lost in gone:
                log.debug("prompt cache: disk slot %s dropped for the disk budget", lost.id)
            for alias in aliases:  # the files of slots gone from both tiers go; nothing else is written now
                binding = self._bindings[alias]
                keep = self._keep(alias)
                if binding.files - keep:
                    self._writer.submit(binding.directory, binding.fingerprint, [], keep)
                    binding.files &= keep

    def _from_disk(self, model_key: str, model: Any, tokens: Sequence[int]) -> str | None:
        """Load the disk slot sharing the longest prefix into RAM if that beats computing; returns its id."""
        with self._lock:
            ram = self._table.reusable(model_key, tokens)
            found = self._disk.best(model_key, tokens)
        binding = self._bindings.get(_split_key(model_key)[0])
        if found is None or found[1] <= ram or binding is None:
            return None
        disk_slot, usable = found
        choice = self._disk.choose(_split_key(model_key)[0], disk_slot, usable - ram)
        if not choice.load:
            self._disk.stats.computed_instead += 1
            log.info("prompt cache: %s (disk slot %s)", choice.reason, disk_slot.id)
            return None
        # Its own spill may still be on the way to the file (other writes need not be waited for).
        self._writer.wait_for(binding.directory, disk_slot.id, LOAD_WAIT_S)
        started = time.perf_counter()
        path = binding.directory / f"{disk_slot.id}{SUFFIX}"
        try:
            import mlx.core as mx

            saved = read_slot(path, binding.fingerprint, len(fresh_cache(model)))
            mx.eval([layer.state for layer in saved.cache])
            size = path.stat().st_size
        except Exception as exc:  # a file lost to a failed write or removed by hand: compute instead
            log.warning("prompt cache: cannot load disk slot %s (%s); computing its prefix instead", disk_slot.id, exc)
            with self._lock:
                self._disk.remove(disk_slot.id)
            return None
        seconds = time.perf_counter() - started
        slot: Slot[KVCache] = Slot(
            model_key,
            saved.tokens,
            saved.cache,
            saved.prompt_length,
            self._ops.nbytes(saved.cache),
            id=disk_slot.id,
            hits=disk_slot.hits,
            last_used=time.time(),
            saved_length=len(saved.tokens),
            owner=disk_slot.owner,
        )
        with self._lock:
            self._disk.remove(disk_slot.id)
            self._disk.loaded(size, seconds)
            evicted = self._table.insert(slot)
        log.info(
            "prompt cache: %s: loaded disk slot %s (%d tokens) in %.3fs",
            choice.reason,
            slot.id,
            len(slot.tokens),
            seconds,
        )
        self._spill(evicted)
        return slot.id

    def _keep(self, alias: str) -> set[str]:
        """Ids of the slot files `alias`'s folder should hold: its RAM slots' and its disk slots'."""
        with self._lock:
            ram = {s.id for s in self._table.slots if _split_key(s.key)[0] == alias and persistable(s.cache)}
            disk = {s.id for s in self._disk.slots if _split_key(s.key)[0] == alias}
        return ram | disk

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
                "bytes": self._table.nbytes,
                "shared_prefixes": len({id(s.cache.base) for s in slots if isinstance(s.cache, SharedCache)}),
                "max_slots": self._table.max_slots,
                "max_bytes": self._table.max_bytes,
                "hits": self._hits,
                "misses": self._misses,
                "reused_tokens": self._reused_tokens,
                "prompt_tokens": self._prompt_tokens,
            }
            persisted = {alias: len(binding.files) for alias, binding in self._bindings.items()}
            totals["hits_ram"] = self._disk.stats.ram_hits
            totals["hits_disk"] = self._disk.stats.disk_hits
            disk = self._disk.describe()
            bound = [s for s in slots if _split_key(s.key)[0] in self._bindings and persistable(s.cache)]
            unsaved = sum(len(s.tokens) - s.saved_length for s in bound)
        return {
            "enabled": True,
            "slots": describe(slots),
            "totals": totals,
            "disk": disk,
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
        if self._disk.max_bytes > 0 and alias not in self._disk.compute_rates:
            self._disk.compute_rates[alias] = _prefill_rate(model)
        adopted = listed = 0
        with self._lock:
            for stale in [s for s in self._disk.slots if _split_key(s.key)[0] == alias]:
                self._disk.remove(stale.id)  # listed again below from what the folder holds now
        room = True
        for saved in load_slots(directory, fingerprint, len(fresh_cache(model))):
            if not room:
                if self._disk.max_bytes <= 0:
                    break
                listed += self._list_on_disk(alias, saved, binding)
                continue
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
                room = self._table.adopt(slot)
            if not room:
                if self._disk.max_bytes <= 0:
                    break
                listed += self._list_on_disk(alias, saved, binding)
                continue
            binding.files.add(saved.id)
            adopted += 1
        self._bindings[alias] = binding
        if adopted or listed:
            log.info(
                "prompt cache: restored %d slot(s) of %s into RAM and listed %d on disk, from %s",
                adopted,
                alias,
                listed,
                directory,
            )
        return adopted

    def _list_on_disk(self, alias: str, saved: SavedSlot, binding: _Binding) -> int:
        """List a saved slot beyond the RAM budget as a disk slot (its arrays are not kept); 1 if listed."""
        path = binding.directory / f"{saved.id}{SUFFIX}"
        try:
            size = path.stat().st_size
        except OSError:
            return 0
        owner = Owner(saved.session, saved.agent)
        key = cache_key(alias, saved.namespace)
        disk_slot = DiskSlot(saved.id, key, saved.tokens, saved.prompt_length, saved.hits, owner, size, 0.0)
        with self._lock:
            self._disk.slots.insert(0, disk_slot)  # oldest first: `load_slots` gives the newest first
            if self._disk.nbytes > self._disk.max_bytes:
                self._disk.slots.pop(0)
                return 0
        binding.files.add(saved.id)
        return 1

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
            for slot_id in failed:
                if self._disk.remove(slot_id) is not None:  # its cache was only in that write: lost
                    self._disk.stats.dropped += 1
        keep = self._keep(alias)
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


def _max_tail(slot: Slot[KVCache], tokens: Sequence[int]) -> int:
    """The longer of the two tails a shared prefix of `slot` and `tokens` would leave."""
    shared = common_prefix(slot.tokens, tokens)
    return max(len(slot.tokens), len(tokens)) - shared


def _prefill_rate(model: Any) -> float:
    """Prompt tokens per second of `model` on this machine, from a timed prefill of `PROBE_TOKENS` tokens.

    Measured when a model's cache folder is bound (at load, before it serves), not inside a request: on a slow
    machine the probe takes seconds, which a request that only wanted its slot loaded would wait for.
    """
    probe = [1 + i % 255 for i in range(PROBE_TOKENS)]  # any ids inside every vocabulary
    prefill(model, fresh_cache(model), probe[:_PROBE_WARM_TOKENS], _PROBE_WARM_TOKENS)
    started = time.perf_counter()
    prefill(model, fresh_cache(model), probe, len(probe))
    rate = len(probe) / max(time.perf_counter() - started, 1e-6)
    log.info("prompt cache: prefill measured at %.0f tokens/s (%d tokens)", rate, len(probe))
    return rate


def build_prompt_cache(slots: int, max_bytes: int, persist_interval: float, disk_bytes: int = 0) -> PromptCacheStore:
    """The store a server uses: `FreshPromptCache` when `slots` is 0, else a `SlotPromptCache`."""
    if slots <= 0:
        return FreshPromptCache()
    return SlotPromptCache(slots, max_bytes, persist_interval, disk_bytes=disk_bytes)
