"""Shared prefixes held once: sessions sharing a long system prompt keep one copy of its keys and values.

Runs the tiny model in this process (MLX on the CPU): prompts of a 1,500-token shared prefix plus each
session's own tokens are prefilled and stored as the engine does, and RAM is read from MLX's own counter.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from adapters.mlx_server.cache_mlx import prefill
from adapters.mlx_server.cache_shared import SharedCache, make_base, materialize, share
from adapters.mlx_server.prompt_cache import SlotPromptCache
from tests.tiny_model import make_tiny_llama

PREFIX = 1500
OWN = 100
KEY = "tiny"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlx_lm import load

    folder = make_tiny_llama(tmp_path_factory.mktemp("shared") / "tiny", context=4096)
    return load(str(folder))[0]


def session_tokens(index: int) -> list[int]:
    prefix = [(7 * i) % 300 + 3 for i in range(PREFIX)]
    return prefix + [(index * 31 + i) % 300 + 3 for i in range(OWN)]


def serve(store: SlotPromptCache, model: Any, tokens: list[int], *, borrow: bool) -> int:
    """What the engine does with one prompt: fetch, prefill what is missing, store; returns tokens reused."""
    lease = store.fetch(KEY, model, tokens, borrow=borrow)
    cache = lease.cache
    if borrow:
        from adapters.mlx_server.cache_mlx import MlxCacheOps

        cache = MlxCacheOps().copy_prefix(cache, lease.reused, lease.reused)  # the batch's own copy
    prefill(model, cache, tokens[lease.reused :], 512)
    store.store(lease, tokens, cache)
    return lease.reused


def active_bytes() -> int:
    import mlx.core as mx

    gc.collect()
    return int(mx.get_active_memory())


@pytest.mark.parametrize("borrow", [False, True])
def test_ram_per_added_session_is_its_own_tokens_not_the_shared_prefix_again(model: Any, borrow: bool) -> None:
    store = SlotPromptCache(slots=32, max_bytes=1 << 40)
    baseline = active_bytes()
    used: dict[int, int] = {}
    for index in range(8):
        reused = serve(store, model, session_tokens(index), borrow=borrow)
        if index:
            assert reused >= PREFIX, "every later session starts from the shared prefix"
        if index + 1 in (1, 4, 8):
            used[index + 1] = active_bytes() - baseline
    per_token = used[1] / (PREFIX + OWN)
    per_session = (used[8] - used[4]) / 4
    assert per_session <= 1.2 * OWN * per_token, (used, per_token)
    totals = store.describe()["totals"]
    assert totals["slots"] == 8 and totals["shared_prefixes"] == 1
    assert totals["bytes"] <= 1.2 * (PREFIX + 8 * OWN) * per_token, totals


def test_a_shared_slot_hands_out_the_very_keys_and_values_it_was_given(model: Any) -> None:
    import mlx.core as mx

    from adapters.mlx_server.cache_mlx import fresh_cache

    tokens = session_tokens(0)
    plain = fresh_cache(model)
    prefill(model, plain, tokens, 512)
    base = make_base(plain, PREFIX)
    shared = share(plain, base)
    assert isinstance(shared, SharedCache) and shared.length == len(tokens)
    for original, back in zip(plain, materialize(shared), strict=True):
        assert back.offset == original.offset
        assert mx.array_equal(back.keys, original.keys[..., : original.offset, :]).item()
        assert mx.array_equal(back.values, original.values[..., : original.offset, :]).item()


def test_a_session_continues_from_a_shared_slot_as_from_a_fresh_prefill(model: Any) -> None:
    import mlx.core as mx

    from adapters.mlx_server.cache_mlx import fresh_cache

    store = SlotPromptCache(slots=32, max_bytes=1 << 40)
    for index in range(3):
        serve(store, model, session_tokens(index), borrow=False)
    follow_up = [*session_tokens(1), 5, 6, 7]
    lease = store.fetch(KEY, model, follow_up)
    assert lease.reused == len(follow_up) - 3
    cached_logits = model(mx.array(follow_up[lease.reused :])[None], cache=lease.cache)[:, -1, :]
    fresh = fresh_cache(model)
    fresh_logits = model(mx.array(follow_up)[None], cache=fresh)[:, -1, :]
    assert mx.argmax(cached_logits).item() == mx.argmax(fresh_logits).item()
    assert mx.allclose(cached_logits, fresh_logits, atol=1e-4).item()


def test_a_conversation_far_past_the_shared_prefix_stays_whole(model: Any) -> None:
    store = SlotPromptCache(slots=32, max_bytes=1 << 40)
    for index in range(2):
        serve(store, model, session_tokens(index), borrow=False)
    long_main = [*session_tokens(2), *[(5 * i) % 300 + 3 for i in range(PREFIX + 100)]]
    serve(store, model, long_main, borrow=False)
    rows = {row["tokens"]: row for row in store.describe()["slots"]}
    assert set(rows) == {PREFIX + OWN, len(long_main)}
    totals = store.describe()["totals"]
    assert totals["shared_prefixes"] == 1 and totals["slots"] == 3
    [main] = [s for s in store._table.slots if len(s.tokens) == len(long_main)]
    assert not isinstance(main.cache, SharedCache), "its tail would be longer than the prefix it shares"
