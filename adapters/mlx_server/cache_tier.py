"""The disk tier behind the RAM slots: slot files of caches pushed out of the RAM budget, and when to load one.

A slot evicted from RAM is written to its model's cache folder (the same file `cache_disk.py` writes for
persistence, so a RAM slot's file and a disk slot's file are one format and one folder) and listed here with
its tokens and owner, but no arrays. A later prompt that shares more of its prefix with a disk slot than with
any RAM slot may load that file back into RAM instead of prefilling the difference: `choose` compares the two
at rates measured on this machine (bytes per second of earlier loads, prompt tokens per second of a timed
prefill of the model), and says which it chose and why.

The tier has its own byte budget and the RAM table's eviction order (`cache_slots.victim_index`: side
requests first, then subagents, main conversations last, least recently used within each). Files are only
ever replaced whole (`os.replace` of a finished temp file), so a kill at any point leaves each slot file old,
new or absent; a listed slot whose file turns out missing or unreadable is dropped and its prefix computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.mlx_server.cache_slots import Owner, common_prefix, victim_index

# Weight of the newest load in the running load rate (a page cache makes repeated loads faster).
_RATE_WEIGHT = 0.5


@dataclass
class DiskSlot:
    """A slot whose cache is only in its file; what `fetch` needs to decide without reading it."""

    id: str
    key: str
    tokens: list[int]
    prompt_length: int
    hits: int
    owner: Owner
    nbytes: int
    last_used: float = 0.0


@dataclass(frozen=True)
class Choice:
    load: bool
    reason: str


@dataclass
class TierStats:
    ram_hits: int = 0
    disk_hits: int = 0
    loads: int = 0
    load_seconds: float = 0.0
    loaded_bytes: int = 0
    computed_instead: int = 0  # disk slots passed over because computing was faster
    spills: int = 0
    dropped: int = 0  # disk slots evicted for the disk budget, or lost to a failed write


@dataclass
class DiskTier:
    """Disk slots, least recently used first, within `max_bytes`."""

    max_bytes: int
    slots: list[DiskSlot] = field(default_factory=list)
    stats: TierStats = field(default_factory=TierStats)
    load_rate: float | None = None  # bytes per second, measured
    compute_rates: dict[str, float] = field(default_factory=dict)  # prompt tokens per second, by model alias

    @property
    def nbytes(self) -> int:
        return sum(slot.nbytes for slot in self.slots)

    def ids(self, key_matches: Sequence[str] | None = None) -> set[str]:
        return {slot.id for slot in self.slots if key_matches is None or slot.key in key_matches}

    def add(self, slot: DiskSlot) -> None:
        """List `slot` as the most recent disk slot; slots it holds all of (same key, a prefix of it) go."""
        self.slots = [
            s
            for s in self.slots
            if s.id != slot.id and not (s.key == slot.key and common_prefix(s.tokens, slot.tokens) == len(s.tokens))
        ]
        self.slots.append(slot)

    def covered_by(self, key: str, tokens: Sequence[int]) -> None:
        """Forget disk slots a RAM slot holding `tokens` now holds all of (their files go at the next save)."""
        self.slots = [s for s in self.slots if not (s.key == key and common_prefix(s.tokens, tokens) == len(s.tokens))]

    def remove(self, slot_id: str) -> DiskSlot | None:
        found = next((s for s in self.slots if s.id == slot_id), None)
        if found is not None:
            self.slots.remove(found)
        return found

    def fit(self, other_bytes: int) -> list[DiskSlot]:
        """Evict disk slots until they and `other_bytes` (RAM slots' files) fit `max_bytes`; returns them."""
        evicted: list[DiskSlot] = []
        while self.slots and self.nbytes + other_bytes > self.max_bytes:
            evicted.append(self.slots.pop(victim_index(self.slots)))
        self.stats.dropped += len(evicted)
        return evicted

    def best(self, key: str, tokens: Sequence[int]) -> tuple[DiskSlot, int] | None:
        """The disk slot sharing the longest prefix with `tokens`, and how many tokens of it are usable."""
        found: tuple[DiskSlot, int] | None = None
        for slot in self.slots:
            if slot.key != key:
                continue
            usable = min(common_prefix(slot.tokens, tokens), len(tokens) - 1)
            if usable > 0 and (found is None or usable > found[1]):
                found = (slot, usable)
        return found

    def choose(self, alias: str, slot: DiskSlot, gain: int) -> Choice:
        """Load `slot` (its whole file) or compute the `gain` tokens it would save, whichever is faster."""
        compute = self.compute_rates.get(alias)
        computing = f"computing {gain} tokens"
        if compute:
            computing += f" (~{gain / compute:.3f}s at {compute:.0f} tokens/s)"
        if self.load_rate is None:
            return Choice(True, f"loading {slot.nbytes / 1e6:.1f} MB (no load measured yet) rather than {computing}")
        load_s = slot.nbytes / self.load_rate
        loading = f"loading {slot.nbytes / 1e6:.1f} MB (~{load_s:.3f}s at {self.load_rate / 1e9:.2f} GB/s)"
        if compute is None or load_s < gain / compute:
            return Choice(True, f"{loading} rather than {computing}")
        return Choice(False, f"{computing} rather than {loading}")

    def loaded(self, nbytes: int, seconds: float) -> None:
        """Count a load and fold its rate into the running one."""
        self.stats.loads += 1
        self.stats.load_seconds += seconds
        self.stats.loaded_bytes += nbytes
        rate = nbytes / max(seconds, 1e-6)
        self.load_rate = rate if self.load_rate is None else _RATE_WEIGHT * rate + (1 - _RATE_WEIGHT) * self.load_rate

    def describe(self) -> dict[str, object]:
        stats = self.stats
        return {
            "slots": len(self.slots),
            "bytes": self.nbytes,
            "max_bytes": self.max_bytes,
            "hits": stats.disk_hits,
            "loads": stats.loads,
            "load_s": round(stats.load_seconds, 3),
            "loaded_bytes": stats.loaded_bytes,
            "load_rate_bytes_s": round(self.load_rate) if self.load_rate else None,
            "prefill_tokens_s": {key: round(rate, 1) for key, rate in self.compute_rates.items()},
            "computed_instead": stats.computed_instead,
            "spills": stats.spills,
            "dropped": stats.dropped,
        }
