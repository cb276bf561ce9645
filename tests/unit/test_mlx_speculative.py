"""Speculative decoding's parts on their own: the n-gram drafter, the draft policy, and the acceptance rule on a
toy bigram model whose distributions are known exactly (greedy: the same tokens; sampling: the same distribution)."""

from __future__ import annotations

import itertools
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from adapters.mlx_server.speculative import (
    DRAFT_FIRST,
    DRAFT_MAX,
    JUDGE_AFTER,
    PAUSE_FIRST,
    DraftPolicy,
    LoneDecoder,
    NgramDrafter,
    accept,
)

VOCAB = 4


def test_the_drafter_continues_the_most_recent_longest_match() -> None:
    #           0  1  2  3  4  5  6  7  8  9 10 11
    drafter = NgramDrafter([5, 6, 7, 1, 5, 6, 8, 2, 9, 5, 6, 7])
    # "5 6 7" (3 tokens) occurred at 0..2, followed by 1 5 6 8; "6 7" alone would say the same here.
    assert drafter.draft(4) == [1, 5, 6, 8]
    drafter.extend([3])
    # "7 3" never occurred: no bigram match, no draft.
    assert drafter.draft(4) == []
    drafter.extend([5, 6])
    # "5 6" occurred three times before; the latest, at 9..10, is followed by 7 3 5 6.
    assert drafter.draft(2) == [7, 3]
    assert drafter.draft(2, min_n=3) == []  # "3 5 6" never occurred before
    assert drafter.draft(0) == []


def test_the_drafter_drafts_only_what_follows() -> None:
    drafter = NgramDrafter([1, 2, 3, 1, 2])
    assert drafter.draft(8) == [3, 1, 2]


def test_the_draft_grows_while_kept_and_shrinks_to_what_was_kept() -> None:
    policy = DraftPolicy()
    assert policy.length == DRAFT_FIRST
    policy.record(drafted=DRAFT_FIRST, accepted=DRAFT_FIRST, produced=DRAFT_FIRST + 1)
    assert policy.length == min(DRAFT_MAX, DRAFT_FIRST * 2)
    policy.record(drafted=policy.length, accepted=1, produced=2)
    assert policy.length == 2
    assert (policy.steps, policy.produced) == (2, DRAFT_FIRST + 3)


def test_drafting_that_is_rarely_kept_pauses_longer_each_time() -> None:
    policy = DraftPolicy()
    while policy.drafted < JUDGE_AFTER:
        assert policy.pays()
        policy.record(drafted=2, accepted=0, produced=1)
    assert not policy.pays()
    policy.pause(generated=100)
    assert policy.paused_until == 100 + PAUSE_FIRST and policy.pays()
    while policy.pays():
        policy.record(drafted=2, accepted=0, produced=1)
    policy.pause(generated=200)
    assert policy.paused_until == 200 + 2 * PAUSE_FIRST


def test_accept_keeps_the_draft_up_to_the_first_difference() -> None:
    assert accept([4, 5, 6], [4, 5, 7, 9]) == [4, 5, 7]
    assert accept([4, 5], [4, 5, 8]) == [4, 5, 8]
    assert accept([4, 5], [3, 5, 8]) == [3]
    assert accept([], [2]) == [2]


class _Layer:
    """A cache layer that only counts positions, trimmable like mlx-lm's KVCache."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def trim(self, n: int) -> int:
        self.offset -= n
        return n

    @property
    def state(self) -> Any:
        return mx.array(self.offset)


class _Bigram:
    """A model whose next-token logits depend on the current token only: exact distributions are known."""

    def __init__(self, seed: int) -> None:
        self.table = mx.array(np.random.default_rng(seed).normal(0, 1.2, (VOCAB, VOCAB)).astype(np.float32))

    def __call__(self, inputs: mx.array, cache: list[_Layer]) -> mx.array:
        cache[0].offset += inputs.shape[1]
        return self.table[inputs]


def _probabilities(model: _Bigram, temperature: float) -> np.ndarray:
    logits = np.array(model.table) / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _speculative_pairs(model: _Bigram, sampler: Any, draft: list[int], trials: int) -> np.ndarray:
    """Counts of the first two tokens after token 0, produced by passes that always draft `draft` first."""
    counts = np.zeros((VOCAB, VOCAB))
    for _ in range(trials):
        cache = [_Layer()]
        decoder = LoneDecoder(model, cache, [0], sampler, [])
        produced = decoder.step(draft).tokens
        if len(produced) < 2:
            produced += decoder.step([]).tokens
        counts[produced[0], produced[1]] += 1
        assert cache[0].offset == len(decoder.tokens) - 1  # the cache holds all but the pending token
    return counts


@pytest.mark.parametrize("draft", [[1, 2], [3], [2, 2, 2]])
def test_sampling_keeps_the_distribution(draft: list[int]) -> None:
    mx.random.seed(7)
    model = _Bigram(seed=3)
    probabilities = _probabilities(model, temperature=0.8)
    trials = 3000
    counts = _speculative_pairs(model, make_sampler(temp=0.8), draft, trials)
    expected = np.array([[probabilities[0, a] * probabilities[a, b] for b in range(VOCAB)] for a in range(VOCAB)])
    chi2 = float((((counts - trials * expected) ** 2) / (trials * expected)).sum())
    # 15 degrees of freedom: 37.7 is the 0.1 % critical value; keeping every drafted token scores in the hundreds.
    assert chi2 < 37.7, (chi2, counts / trials, expected)


def test_greedy_passes_give_the_plain_greedy_tokens_with_a_repetition_penalty() -> None:
    model = _Bigram(seed=6)
    greedy = make_sampler(temp=0.0)
    processors = make_logits_processors(repetition_penalty=4.0, repetition_context_size=3)

    def plain(history: list[int], count: int) -> list[int]:
        history = list(history)
        for _ in range(count):
            logits = model(mx.array(history[-1:])[None], [_Layer()])[:, -1, :]
            for processor in processors:
                logits = processor(mx.array(history), logits)
            history.append(int(greedy(logits).item()))  # type: ignore[arg-type]
        return history

    expected = plain([0, 1, 2, 3], 12)
    # The penalty shapes this reply, drafted tokens included: a pass that let position i see the token drafted
    # for i + 1 penalises it there and gives other tokens (seen with this table).
    for draft_source in itertools.product(range(VOCAB), repeat=2):
        decoder = LoneDecoder(model, [_Layer()], [0, 1, 2, 3], greedy, processors)
        while len(decoder.tokens) < len(expected):
            decoder.step(list(draft_source))
        assert decoder.tokens[: len(expected)] == expected, draft_source


def test_settle_leaves_the_cache_holding_exactly_the_kept_tokens() -> None:
    model = _Bigram(seed=1)
    cache = [_Layer(offset=1)]  # it holds the history less its last (pending) token
    decoder = LoneDecoder(model, cache, [0, 1], make_sampler(temp=0.0), [])
    decoder.step([1, 1, 1])
    length = len(decoder.tokens)
    kept = decoder.settle(dropped=0)
    assert len(kept) == length and cache[0].offset == length  # the pending token was fed
    # A draft the greedy model keeps: a stop after its second token drops the rest of the pass.
    cache = [_Layer(offset=1)]
    decoder = LoneDecoder(model, cache, [0, 1], make_sampler(temp=0.0), [])
    draft = [kept[2]]
    produced = decoder.step(draft).tokens
    assert len(produced) == 2
    kept = decoder.settle(dropped=1)
    assert kept == [0, 1, draft[0]] and cache[0].offset == len(kept)
