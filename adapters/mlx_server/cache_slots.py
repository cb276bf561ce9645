"""Prompt-cache slots: which cached token sequence a prompt starts from, and who owns that cache afterwards.

A slot is one KV cache and the exact tokens whose keys and values it holds (`Slot.tokens`): the prompt
of the request that last used it plus the tokens it generated *and fed back* (the last sampled token
usually never went through the model, so it is not there). `prompt_length` marks where the tokens a
client sent end and the model's own output begins.

Ownership: a cache object belongs to exactly one holder at a time. mlx-lm caches are written in place
(`KVCache.update_and_fetch` assigns into its buffer; `trim` only moves the offset back), so two slots
sharing one cache would overwrite each other's keys. A caller that writes into the cache it is given
(`borrow=False`: the one-at-a-time path) therefore gets it either

- **moved** out of its slot: the request extends that very cache and `put` brings it back holding the new
  sequence. This happens when the slot's tokens are a prefix of the prompt (a conversation's next turn),
  or when the prompt leaves the slot only inside the slot's own generated tail (the client re-rendered
  the reply differently, or resent the same prompt): that tail is the model's reply as the model
  tokenized it, which the new prompt has replaced, so trimming it loses nothing worth keeping; or
- **copied**: the common prefix goes into a new cache and the slot stays untouched, when the prompt diverges
  inside tokens a client sent (a side request sharing the system prompt, an edited or forked history).
  So two different continuations of one prefix both survive: each becomes its own slot.

A caller that only reads it (`borrow=True`: the batch path, where mlx-lm copies every cache into the batch's
own arrays) gets the slot's cache itself, or views of its prefix, and the slot stays in the table: requests
running at the same time (parallel subagents sharing a system prompt) all reuse it. Where the one-at-a-time
path would have moved the slot, the lease names it (`supersedes`), and `put` replaces it with the result.

Trim rules: reuse is capped at `len(prompt) - 1`, because the model must see at least the last prompt
token to give logits (an exact repeat is trimmed by one). Dropping tokens needs a trimmable cache
(`CacheOps.trimmable`: a plain `KVCache`, a rotating one not yet wrapped); others (a rotating window that
wrapped, recurrent state) are reused only when the slot's tokens are an exact prefix of the prompt.

Budget: after each `put`, slots whose tokens are a prefix of the new slot's are dropped (it holds all
they had), then slots go until at most `max_slots` remain within `max_bytes` (the newest slot always stays,
so one conversation larger than the budget still reuses its own prefix). Which go first is decided by owner
(Claude Code's session and agent ids, sent with each request): each owner's conversation (its "head": the
most recently used of its slots at least half as long as its longest, so a compacted conversation takes
over from the one it replaced, while a short side request never does) stays longest; everything else (side
requests, superseded forks) goes first, least recently used first; then subagents' conversations; main
conversations last. So parallel subagents and their side
requests never evict the main conversation while anything else can go, and never each other while a side
request can.
Everything here is pure bookkeeping over a `CacheOps`; callers serialize access (one generation thread).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

C = TypeVar("C")


class CacheOps(Protocol[C]):
    """What the slot logic needs to know about a cache (mlx-lm's in `cache_mlx.py`; fakes in tests)."""

    def nbytes(self, cache: C) -> int:
        """Bytes of `cache` that are its own (a shared base's are in `shared`)."""
        ...

    def shared(self, cache: C) -> tuple[object, int] | None:
        """The shared base `cache` stands on (any object, compared by identity) and its bytes, or None."""
        ...

    def trimmable(self, cache: C) -> bool: ...

    def trim(self, cache: C, count: int) -> None:
        """Forget the last `count` tokens, in place."""
        ...

    def copy_prefix(self, cache: C, length: int, held: int) -> C:
        """A new cache, sharing nothing writable with `cache` (which holds `held` tokens), with its first `length`."""
        ...


@dataclass(frozen=True)
class Owner:
    """Who a slot's tokens belong to: a Claude Code session and, for a subagent, its agent id ("" if none).

    Requests without these headers (other clients) share the anonymous owner, which is treated like a main
    conversation: its largest slot is protected from its own side requests.
    """

    session: str = ""
    agent: str = ""

    @property
    def is_agent(self) -> bool:
        return bool(self.agent)


ANONYMOUS = Owner()


@dataclass
class Slot(Generic[C]):
    key: str
    tokens: list[int]
    cache: C
    prompt_length: int
    nbytes: int
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    hits: int = 0
    last_used: float = 0.0
    # Tokens of this slot known to be on disk as a prefix of `tokens` (persistence bookkeeping).
    saved_length: int = 0
    owner: Owner = ANONYMOUS


@dataclass
class Lease(Generic[C]):
    """What `take` hands out: a cache holding `tokens[:reused]`, and where it came from."""

    cache: C
    reused: int
    prompt_length: int
    key: str = ""
    owner: Owner = ANONYMOUS
    moved: Slot[C] | None = None  # the slot taken out (its id and hits carry over to `put`)
    supersedes: str | None = None  # borrowed: the id of the slot the result replaces at `put`
    copied_from: str | None = None


# Tokens compared a block at a time (a slice comparison runs in C): every request's fetch compares its
# prompt with every slot, and Claude Code's prompts share 15-20k tokens (one by one: ~1 ms per 20k a slot).
_PREFIX_BLOCK = 512


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    end = min(len(a), len(b))
    start = 0
    while start < end:
        stop = min(start + _PREFIX_BLOCK, end)
        x, y = a[start:stop], b[start:stop]
        if x == y if type(x) is type(y) else list(x) == list(y):
            start = stop
            continue
        return next(i for i in range(start, stop) if a[i] != b[i])
    return end


@dataclass(frozen=True)
class _Candidate(Generic[C]):
    slot: Slot[C]
    usable: int
    move: bool

    def rank(self, order: int) -> tuple[int, bool, int]:
        # Longest reuse first; then a move (no copy, no new slot); then the most recently used.
        return (self.usable, self.move, order)


class SlotTable(Generic[C]):
    """Slots in least- to most-recently-used order, with longest-prefix `take` and budgeted `put`."""

    def __init__(
        self, ops: CacheOps[C], max_slots: int, max_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._ops = ops
        self.max_slots = max_slots
        self.max_bytes = max_bytes
        self._clock = clock
        self._slots: list[Slot[C]] = []

    @property
    def slots(self) -> list[Slot[C]]:
        """The slots, least recently used first (a copy of the list)."""
        return list(self._slots)

    @property
    def nbytes(self) -> int:
        """The slots' own bytes, plus each shared base once."""
        bases = {id(found[0]): found[1] for s in self._slots if (found := self._ops.shared(s.cache)) is not None}
        return sum(slot.nbytes for slot in self._slots) + sum(bases.values())

    def take(
        self,
        key: str,
        tokens: Sequence[int],
        fresh: Callable[[], C],
        *,
        borrow: bool = False,
        owner: Owner = ANONYMOUS,
    ) -> Lease[C]:
        """A cache to start `tokens` from: moved out of a slot, copied or borrowed from one, or `fresh()`.

        With `borrow`, the caller must not write into the cache (see the module's docstring).
        """
        best: _Candidate[C] | None = None
        best_rank: tuple[int, bool, int] | None = None
        for order, slot in enumerate(self._slots):
            if slot.key != key:
                continue
            candidate = self._candidate(slot, tokens)
            if candidate is None:
                continue
            rank = candidate.rank(order)
            if best_rank is None or rank > best_rank:
                best, best_rank = candidate, rank
        if best is None:
            return Lease(fresh(), 0, len(tokens), key, owner)
        slot = best.slot
        slot.hits += 1
        slot.last_used = self._clock()
        if borrow:
            self._touch(slot)
            whole = best.usable == len(slot.tokens)
            cache = slot.cache if whole else self._ops.copy_prefix(slot.cache, best.usable, len(slot.tokens))
            supersedes = slot.id if best.move else None
            return Lease(cache, best.usable, len(tokens), key, owner, supersedes=supersedes, copied_from=slot.id)
        if not best.move:
            self._touch(slot)
            copy = self._ops.copy_prefix(slot.cache, best.usable, len(slot.tokens))
            return Lease(copy, best.usable, len(tokens), key, owner, copied_from=slot.id)
        self._slots.remove(slot)
        if best.usable < len(slot.tokens):
            self._ops.trim(slot.cache, len(slot.tokens) - best.usable)
        return Lease(slot.cache, best.usable, len(tokens), key, owner, moved=slot)

    def reusable(self, key: str, tokens: Sequence[int]) -> int:
        """How many of `tokens` a `take` would reuse now (nothing is taken)."""
        usable = [c.usable for s in self._slots if s.key == key and (c := self._candidate(s, tokens)) is not None]
        return max(usable, default=0)

    def put(
        self, key: str, tokens: Sequence[int], cache: C, lease: Lease[C] | None, owner: Owner | None = None
    ) -> list[Slot[C]]:
        """Keep `cache`, which holds exactly `tokens`, as the most recent slot; returns the slots evicted.

        `lease` is the one the cache came from (its slot's id carries over), or None for a new slot (a
        checkpoint of a request still running); `owner` defaults to the lease's.
        """
        prompt_length = min(lease.prompt_length if lease else len(tokens), len(tokens))
        owner = owner if owner is not None else (lease.owner if lease else ANONYMOUS)
        slot = Slot(key, list(tokens), cache, prompt_length, self._ops.nbytes(cache), last_used=self._clock())
        slot.owner = owner
        old = lease.moved if lease is not None else None
        if lease is not None and lease.supersedes is not None:
            old = next((s for s in self._slots if s.id == lease.supersedes), None)
            if old is not None:
                self._slots.remove(old)
        if old is not None:
            slot.id, slot.hits = old.id, old.hits
            # What is on disk is still valid as far as the new tokens agree with it.
            slot.saved_length = min(old.saved_length, common_prefix(old.tokens, tokens))
        evicted = [s for s in self._slots if s.key == key and common_prefix(s.tokens, tokens) == len(s.tokens)]
        self._slots = [s for s in self._slots if s not in evicted]
        return evicted + self.insert(slot)

    def insert(self, slot: Slot[C]) -> list[Slot[C]]:
        """Add `slot` as the most recent one (a slot loaded back from disk), then evict to the budget."""
        self._slots.append(slot)
        evicted: list[Slot[C]] = []
        # The new slot itself always stays: a conversation larger than the budget still reuses its own prefix.
        while len(self._slots) > 1 and (len(self._slots) > self.max_slots or self.nbytes > self.max_bytes):
            evicted.append(self._slots.pop(victim_index(self._slots[:-1])))
        return evicted

    def drop(self, matches: Callable[[str], bool]) -> list[Slot[C]]:
        """Remove every slot whose key `matches`; returns them."""
        dropped = [slot for slot in self._slots if matches(slot.key)]
        self._slots = [slot for slot in self._slots if not matches(slot.key)]
        return dropped

    def adopt(self, slot: Slot[C]) -> bool:
        """Add a slot restored from disk as the least recently used one, if the budget has room."""
        if len(self._slots) >= self.max_slots or self.nbytes + slot.nbytes > self.max_bytes:
            return False
        self._slots.insert(0, slot)
        return True

    def _touch(self, slot: Slot[C]) -> None:
        self._slots.remove(slot)
        self._slots.append(slot)

    def _candidate(self, slot: Slot[C], tokens: Sequence[int]) -> _Candidate[C] | None:
        shared = common_prefix(slot.tokens, tokens)
        usable = min(shared, len(tokens) - 1)
        if usable <= 0:
            return None
        if usable == len(slot.tokens):
            return _Candidate(slot, usable, move=True)  # the slot is a prefix of the prompt: extend it
        if not self._ops.trimmable(slot.cache):
            return None  # it would have to forget tokens, and this cache cannot
        resent = len(tokens) == slot.prompt_length and shared == len(tokens)
        return _Candidate(slot, usable, move=usable >= slot.prompt_length or resent)


class Evictable(Protocol):
    """What the eviction order reads: a RAM slot or a slot file on disk."""

    @property
    def owner(self) -> Owner: ...

    @property
    def tokens(self) -> list[int]: ...


def victim_index(slots: Sequence[Evictable]) -> int:
    """Index of the one of `slots` (least recently used first) to evict next: see "Budget" in the module's docstring.

    The RAM table and the disk tier both use this order, so a slot pushed to disk keeps its standing there.
    """
    longest: dict[Owner, int] = {}
    for slot in slots:
        longest[slot.owner] = max(longest.get(slot.owner, 0), len(slot.tokens))
    heads: dict[Owner, Evictable] = {}
    for slot in slots:  # least recently used first, so the last one that qualifies is the head
        if len(slot.tokens) * 2 >= longest[slot.owner]:
            heads[slot.owner] = slot

    def protection(index: int) -> tuple[int, int]:
        slot = slots[index]
        level = 0 if heads[slot.owner] is not slot else (1 if slot.owner.is_agent else 2)
        return level, index

    return min(range(len(slots)), key=protection)


def describe(slots: Sequence[Slot[C]], clock: Callable[[], float] = time.time) -> list[dict[str, object]]:
    """JSON-ready rows for `GET /v1/cache`, most recently used first."""
    now = clock()
    rows: list[dict[str, object]] = []
    for slot in reversed(slots):
        rows.append(
            {
                "id": slot.id,
                "model": slot.key,
                "tokens": len(slot.tokens),
                "prompt_tokens": slot.prompt_length,
                "bytes": slot.nbytes,
                "hits": slot.hits,
                "last_used": slot.last_used,
                "idle_s": round(max(0.0, now - slot.last_used), 3),
                "saved_tokens": slot.saved_length,
                "session": slot.owner.session or None,
                "agent": slot.owner.agent or None,
            }
        )
    return rows
