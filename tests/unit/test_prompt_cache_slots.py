"""The slot table's pure logic with fake caches: longest-prefix choice, move vs copy, trim rules, LRU budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.mlx_server.cache_slots import ANONYMOUS, Owner, Slot, SlotTable, common_prefix


@dataclass
class FakeCache:
    """A cache that records its tokens; `trimmable` False plays a wrapped rotating or recurrent cache."""

    tokens: list[int] = field(default_factory=list)
    trimmable: bool = True
    size_per_token: int = 10


class FakeOps:
    def nbytes(self, cache: FakeCache) -> int:
        return len(cache.tokens) * cache.size_per_token

    def shared(self, cache: FakeCache) -> tuple[object, int] | None:
        return None

    def trimmable(self, cache: FakeCache) -> bool:
        return cache.trimmable

    def trim(self, cache: FakeCache, count: int) -> None:
        assert cache.trimmable
        del cache.tokens[len(cache.tokens) - count :]

    def copy_prefix(self, cache: FakeCache, length: int, held: int) -> FakeCache:
        assert held == len(cache.tokens)
        return FakeCache(cache.tokens[:length], cache.trimmable, cache.size_per_token)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def table(slots: int = 4, max_bytes: int = 10**9) -> SlotTable[FakeCache]:
    return SlotTable(FakeOps(), slots, max_bytes, clock=Clock())


def run(t: SlotTable[FakeCache], tokens: list[int], generated: Sequence[int] = (), key: str = "m") -> int:
    """One request: take, 'prefill' the rest, append the generated tokens that were fed, put back."""
    lease = t.take(key, tokens, FakeCache)
    assert lease.cache.tokens == tokens[: lease.reused], "a lease must hold exactly the reused prefix"
    lease.cache.tokens.extend(tokens[lease.reused :])
    lease.cache.tokens.extend(generated)
    t.put(key, lease.cache.tokens, lease.cache, lease)
    return lease.reused


def test_common_prefix() -> None:
    long = list(range(3000))
    assert common_prefix(long, [*long[:1700], -1, *long[1701:]]) == 1700
    assert common_prefix(long, tuple(long[:2500])) == 2500
    assert common_prefix(long, long) == 3000
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_next_turn_extends_the_slot_it_continues() -> None:
    t = table()
    assert run(t, [1, 2, 3, 4], [5, 6]) == 0
    assert run(t, [1, 2, 3, 4, 5, 6, 7, 8], [9]) == 6
    assert [s.tokens for s in t.slots] == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]


def test_reuse_never_covers_the_whole_prompt() -> None:
    t = table()
    run(t, [1, 2, 3, 4])
    assert run(t, [1, 2, 3, 4]) == 3  # the last token is fed again to get logits


def test_resent_prompt_trims_the_generated_tail_in_place() -> None:
    t = table()
    run(t, [1, 2, 3, 4], [5, 6])
    assert run(t, [1, 2, 3, 4], [7]) == 3
    assert [s.tokens for s in t.slots] == [[1, 2, 3, 4, 7]]


def test_rerendered_reply_trims_the_generated_tail() -> None:
    t = table()
    run(t, [1, 2, 3], [4, 5, 6])
    assert run(t, [1, 2, 3, 4, 9, 9]) == 4  # the client rendered the reply as 4, 9 instead of 4, 5
    assert len(t.slots) == 1


def test_divergence_inside_a_prompt_copies_and_keeps_both_continuations() -> None:
    t = table()
    shared = [1, 2, 3, 4, 5]
    run(t, [*shared, 10, 11])
    assert run(t, [*shared, 20, 21]) == 5
    assert sorted(s.tokens for s in t.slots) == [[*shared, 10, 11], [*shared, 20, 21]]
    # Both continuations still hit in full afterwards (minus the token fed for logits).
    assert run(t, [*shared, 10, 11, 12]) == 7
    assert run(t, [*shared, 20, 21, 22]) == 7


def test_copy_leaves_the_source_untouched() -> None:
    t = table()
    run(t, [1, 2, 3, 4, 5, 6])
    source = t.slots[0]
    lease = t.take("m", [1, 2, 3, 9], FakeCache)
    assert lease.reused == 3 and lease.cache is not source.cache and lease.copied_from == source.id
    lease.cache.tokens.append(9)
    assert source.cache.tokens == [1, 2, 3, 4, 5, 6]


def test_untrimmable_cache_is_reused_only_as_an_exact_prefix() -> None:
    t = table()
    lease = t.take("m", [1, 2, 3], lambda: FakeCache(trimmable=False))
    lease.cache.tokens.extend([1, 2, 3])
    t.put("m", [1, 2, 3], lease.cache, lease)
    assert t.take("m", [1, 2, 9, 9], lambda: FakeCache(trimmable=False)).reused == 0  # would need a trim
    assert t.take("m", [1, 2, 3], lambda: FakeCache(trimmable=False)).reused == 0  # would need a trim by one
    assert t.take("m", [1, 2, 3, 4], lambda: FakeCache(trimmable=False)).reused == 3


def test_longest_prefix_wins_across_slots() -> None:
    t = table()
    run(t, [1, 2, 3, 4, 5, 6, 7, 8])
    run(t, [1, 2, 30, 40])
    assert run(t, [1, 2, 3, 4, 5, 6, 99]) == 6


def test_slots_of_other_keys_are_never_used() -> None:
    t = table()
    run(t, [1, 2, 3, 4], key="a")
    assert run(t, [1, 2, 3, 4, 5], key="b") == 0


def test_lru_eviction_by_slot_count_keeps_the_busy_conversation() -> None:
    t = table(slots=2)
    conversation = [1, 2, 3, 4]
    run(t, conversation, [5])
    for side in range(3):
        conversation += [5, 10 + side]
        run(t, conversation, [5])
        run(t, [100 + side, 7, 7])  # an unrelated side request between turns
    kept = [s.tokens[:4] for s in t.slots]
    assert [1, 2, 3, 4] in kept and len(kept) == 2


def test_lru_eviction_by_bytes() -> None:
    t = table(slots=10, max_bytes=100)
    run(t, [1] * 5)  # 50 bytes
    run(t, [2] * 4)  # 40 bytes
    run(t, [3] * 3)  # 30 bytes: 120 > 100, the oldest goes
    assert [s.tokens[0] for s in t.slots] == [2, 3]


def test_a_single_slot_over_the_byte_budget_is_kept() -> None:
    t = table(slots=4, max_bytes=10)
    run(t, [1, 2, 3, 4])
    assert len(t.slots) == 1 and run(t, [1, 2, 3, 4, 5]) == 4


def test_a_slot_that_is_a_prefix_of_a_new_one_is_dropped() -> None:
    t = table()
    run(t, [1, 2, 3, 4, 5, 6])
    run(t, [1, 2, 3, 7])  # copy of [1, 2, 3] extended
    run(t, [1, 2, 3, 7, 8])  # extends the copy; the original is not its prefix and stays
    assert len(t.slots) == 2


def test_moved_slot_keeps_id_and_hits_and_what_is_on_disk_stays_valid() -> None:
    t = table()
    run(t, [1, 2, 3, 4], [5])
    first = t.slots[0]
    first.saved_length = 5
    run(t, [1, 2, 3, 4, 6, 7])
    slot: Slot[FakeCache] = t.slots[0]
    assert slot.id == first.id and slot.hits == 1
    assert slot.saved_length == 4  # the file's tokens agree with the new ones up to the divergence


def test_adopt_respects_the_budget() -> None:
    t = table(slots=1)
    assert t.adopt(Slot("m", [1], FakeCache([1]), 1, 10))
    assert not t.adopt(Slot("m", [2], FakeCache([2]), 1, 10))


def borrow(t: SlotTable[FakeCache], tokens: list[int], generated: Sequence[int] = (), owner: Owner = ANONYMOUS) -> int:
    """One batched request: the lent cache is only read (the batch copies it); the result is a new cache."""
    lease = t.take("m", tokens, FakeCache, borrow=True, owner=owner)
    assert lease.cache.tokens == tokens[: lease.reused], "a lease must hold exactly the reused prefix"
    result = FakeCache([*lease.cache.tokens, *tokens[lease.reused :], *generated])
    t.put("m", result.tokens, result, lease)
    return lease.reused


def test_a_borrowed_slot_stays_for_requests_running_beside_it() -> None:
    t = table()
    run(t, [1, 2, 3, 4, 5, 6])
    source = t.slots[0]
    first = t.take("m", [1, 2, 3, 4, 5, 6, 7], FakeCache, borrow=True)
    second = t.take("m", [1, 2, 3, 4, 5, 6, 8], FakeCache, borrow=True)
    assert (first.reused, second.reused) == (6, 6)
    assert first.cache is source.cache and first.supersedes == source.id
    assert t.slots == [source], "the slot left the table while a request borrowed it"


def test_a_borrowing_turn_replaces_the_slot_it_continued() -> None:
    t = table()
    borrow(t, [1, 2, 3], [4, 5, 6])
    first = t.slots[0]
    assert borrow(t, [1, 2, 3, 4, 9, 9]) == 4  # the reply was re-rendered: the old slot is replaced, not kept
    assert [s.tokens for s in t.slots] == [[1, 2, 3, 4, 9, 9]] and t.slots[0].id == first.id


def test_a_borrowed_prefix_of_a_client_prompt_is_a_view_and_both_continuations_stay() -> None:
    t = table()
    borrow(t, [1, 2, 3, 4, 5, 10, 11])
    assert borrow(t, [1, 2, 3, 4, 5, 20, 21]) == 5
    assert sorted(s.tokens for s in t.slots) == [[1, 2, 3, 4, 5, 10, 11], [1, 2, 3, 4, 5, 20, 21]]


def test_eviction_keeps_the_main_conversation_over_subagents_and_side_requests() -> None:
    t = table(slots=4)
    main, agents = Owner("s1"), [Owner("s1", f"a{n}") for n in range(3)]
    conversation = list(range(100, 140))
    borrow(t, conversation, [1], owner=main)
    for n, agent in enumerate(agents):
        borrow(t, [200 + n, *range(300, 330)], [2], owner=agent)
    borrow(t, [7, 7, 7], [3], owner=main)  # a side request of the main conversation: 5 slots, one must go
    kept = {(s.owner, s.tokens[0]) for s in t.slots}
    assert (main, 100) in kept and (agents[0], 200) not in kept, kept
    borrow(t, [8, 8, 8], [3], owner=main)  # another: the earlier side request goes before any conversation
    assert {s.tokens[0] for s in t.slots} == {100, 201, 202, 8}
    assert borrow(t, [*conversation, 1, 5], owner=main) == len(conversation) + 1


def test_a_compacted_conversation_takes_over_from_the_long_one_it_replaced() -> None:
    t = table(slots=3)
    main = Owner("s1")
    borrow(t, list(range(100, 200)), [1], owner=main)  # the long conversation before compaction
    compacted = list(range(500, 560))
    borrow(t, compacted, [2], owner=main)  # at least half as long, and newer: now the conversation
    borrow(t, [7, 7], owner=main)
    borrow(t, [8, 8], owner=main)  # 4 slots: the old long one goes, not the compacted one
    assert {s.tokens[0] for s in t.slots} == {500, 7, 8}
