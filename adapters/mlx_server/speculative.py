"""Speculative decoding from the prompt: draft the next tokens from text the request already holds, verify them
in one forward pass.

Much of what a coding agent writes is copied: an edit's old text is text the model read a turn earlier, a
rewritten file repeats most of its lines. The longest recent n-gram of the request's own tokens (prompt and reply
so far) that ends where the reply ends usually continues the same way it did before, so the tokens that followed
it are a cheap draft. The model reads the pending token and the draft in one pass and samples every position;
the draft is kept up to the first position where the sample differs, and that sample is kept too. A pass over a
few tokens costs about one decode step (reading the weights dominates), so a copied run of text comes out
several tokens per step.

The acceptance rule keeps the output exactly what plain decoding gives. The draft is one token per position
(probability 1), so the standard rule (keep a drafted token `x` with probability `p(x) / q(x)`, else sample
from the leftover `max(0, p - q)`) becomes: sample from `p` with the request's own sampler; keep `x` when the
sample is `x`, else keep the sample and stop. Greedy sampling then gives the same tokens token for token,
and any other sampling the same distribution; the request's logits processors see at every position the whole
history up to it, as in a plain step.

Where it runs: only for a request decoding alone in its model's batch (one person's main conversation, the
common case). mlx-lm's `BatchGenerator` steps every row one token at a time, and its batch KV cache keeps one
write position for all rows (`BatchKVCache.trim` takes the same count off every row), so rows that keep
different numbers of drafted tokens cannot share it; verifying inside the batch would mean replacing mlx-lm's
batch step and cache. A request alone leaves the batch (`batch.BatchRunner`) with its cache, decodes here,
and goes back into the batch, cache and all, as soon as another request is admitted or drafting stops paying.

A draft model (mlx-lm's `draft_model`) is not offered: it needs its own cache per request and a batched draft
pass, which mlx-lm's batch cannot take either (`mlx_lm.server` turns batching off to use one).

Everything here runs on the generation thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.mlx_server.sampling import LogitsProcessor, Sampler

# n-gram lengths looked up, longest first: a longer match is a surer continuation; single tokens match too often.
NGRAM_MAX = 4
NGRAM_MIN = 2
# A request leaves the batch to draft only on a match at least this long (then shorter ones are used too): a
# two-token match is common in any prose and rarely continues for long.
NGRAM_ENTER = 3
# Draft length bounds and the first length tried. On a CPU a pass over 8 positions still costs little more than
# one (reading the weights dominates); past that the attention and the output head start to tell.
DRAFT_MAX = 8
DRAFT_MIN = 1
DRAFT_FIRST = 4
# Drafting stops paying when fewer than this share of drafted tokens are kept (each verified position costs a
# little compute; a plain batch step is pipelined, this loop is not). Judged over the last drafted tokens,
# and not before `JUDGE_AFTER` have been drafted.
MIN_ACCEPTANCE = 0.35
JUDGE_AFTER = 16
_ACCEPTANCE_SMOOTHING = 0.2
# Tokens decoded plainly (in the batch) before drafting is tried again once it stopped paying; doubles each
# time it stops paying again, so a request where it never pays tries rarely.
PAUSE_FIRST = 32
PAUSE_MAX = 1024
# Steps in a row without a draft after which the request goes back to the (pipelined) batch step, and the
# tokens it then decodes there before drafting is looked for again (leaving and rejoining the batch copies the
# cache and drops a step the batch had queued, so it is not done on every stray match).
IDLE_STEPS = 4
IDLE_PAUSE = 16


class NgramDrafter:
    """The tokens that followed the most recent earlier occurrence of the longest n-gram ending the sequence.

    An index per n-gram length maps each n-gram to the position after its latest occurrence that has a token
    after it; `extend` keeps it current in constant time per token.
    """

    def __init__(self, tokens: Sequence[int], *, min_n: int = NGRAM_MIN, max_n: int = NGRAM_MAX) -> None:
        self.tokens: list[int] = []
        self._sizes = range(max_n, min_n - 1, -1)
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self._sizes}
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        seq = self.tokens
        for token in tokens:
            end = len(seq)  # the position `token` takes: the n-grams ending just before it gain a follower
            seq.append(token)
            for n, index in self._index.items():
                if end >= n:
                    index[tuple(seq[end - n : end])] = end

    def draft(self, limit: int, min_n: int = NGRAM_MIN) -> list[int]:
        """Up to `limit` tokens continuing the sequence; empty when no n-gram of it (of `min_n` tokens or more)
        matched earlier."""
        seq = self.tokens
        if limit <= 0:
            return []
        for n in self._sizes:
            if len(seq) <= n or n < min_n:
                continue
            start = self._index[n].get(tuple(seq[-n:]))
            if start is not None:
                return seq[start : start + limit]
        return []


@dataclass
class DraftPolicy:
    """How many tokens to draft next, and whether drafting pays for this request."""

    length: int = DRAFT_FIRST
    acceptance: float = 1.0  # smoothed share of drafted tokens kept
    drafted: int = 0
    accepted: int = 0
    steps: int = 0  # verification passes
    produced: int = 0  # tokens those passes produced
    paused_until: int = 0  # no drafting before this many reply tokens
    _pause: int = PAUSE_FIRST
    _judged_from: int = 0  # `drafted` when the smoothed figure was last reset

    def record(self, drafted: int, accepted: int, produced: int) -> None:
        """One verification pass: `accepted` of `drafted` tokens kept, `produced` tokens out of it."""
        self.steps += 1
        self.produced += produced
        if drafted == 0:
            return
        self.drafted += drafted
        self.accepted += accepted
        rate = accepted / drafted
        self.acceptance += _ACCEPTANCE_SMOOTHING * (rate - self.acceptance)
        if accepted == drafted:
            self.length = min(DRAFT_MAX, self.length * 2)
        else:
            self.length = max(DRAFT_MIN, min(self.length, accepted + 1))

    def pays(self) -> bool:
        """False once enough was drafted here to tell that too little of it is kept."""
        return self.drafted - self._judged_from < JUDGE_AFTER or self.acceptance >= MIN_ACCEPTANCE

    def pause(self, generated: int) -> None:
        """Stop drafting for a while (it did not pay); the next try starts afresh and, failing, waits longer."""
        self.paused_until = generated + self._pause
        self._pause = min(PAUSE_MAX, self._pause * 2)
        self.acceptance = 1.0
        self.length = DRAFT_FIRST
        self._judged_from = self.drafted


@dataclass
class Verified:
    """One verification pass: the tokens it produced (kept draft, then the model's own) and how many were drafted."""

    tokens: list[int]
    drafted: int

    @property
    def accepted(self) -> int:
        return len(self.tokens) - 1


def accept(draft: Sequence[int], sampled: Sequence[int]) -> list[int]:
    """The tokens a pass produces: the draft up to the first position whose sample differs, then that sample.

    `sampled[i]` is the request's sampler applied to the model's distribution after the history and
    `draft[:i]`; `len(sampled) == len(draft) + 1`. With a draft of probability 1 this is the standard
    speculative acceptance rule: `draft[i]` is kept with probability `p(draft[i])`, and otherwise the token
    comes from `p` without `draft[i]`, renormalised; which is what a sample from `p` that differs is.
    """
    kept = 0
    while kept < len(draft) and sampled[kept] == draft[kept]:
        kept += 1
    return [*draft[:kept], sampled[kept]]


@dataclass
class LoneDecoder:
    """One request decoding outside the batch: its KV cache holds `tokens[:-1]`; `tokens[-1]` is sampled, not fed.

    Args:
        model: the mlx-lm model.
        cache: per-layer trimmable KV caches (mlx-lm's `KVCache`), written in place.
        tokens: prompt and reply so far (the reply's last token not yet in the cache).
        sampler, processors: the request's (`sampling.build_sampling`).
    """

    model: Any
    cache: list[Any]
    tokens: list[int]
    sampler: Sampler
    processors: Sequence[LogitsProcessor]
    _unfed: list[int] = field(default_factory=list)  # produced by the last pass beyond the cache: 0 or 1 token

    def step(self, draft: Sequence[int]) -> Verified:
        """Feed the pending token and `draft` in one pass; return what it produced (at least one token).

        The cache then holds the history and the kept draft; the last produced token is the new pending one.
        """
        import mlx.core as mx

        fed = [self.tokens[-1], *draft]
        inputs = mx.array(fed, dtype=mx.int32)
        logits = self.model(inputs[None], cache=self.cache)[0]  # (len(fed), vocabulary)
        if self.processors:
            history = mx.array(self.tokens + list(draft), dtype=mx.int32)
            base = len(self.tokens)
            rows = []
            for i in range(len(fed)):
                row = logits[i : i + 1]
                for processor in self.processors:  # the history up to and including position i, as in a plain step
                    row = processor(history[: base + i], row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        sampled: list[int] = self.sampler(logprobs).tolist()  # type: ignore[assignment]
        produced = accept(draft, sampled)
        self._trim(len(draft) - (len(produced) - 1))
        self.tokens.extend(produced)
        return Verified(produced, len(draft))

    def settle(self, dropped: int) -> list[int]:
        """Make the cache hold exactly the history less its last `dropped` tokens; return that history.

        Called once the request ends: the reply may have stopped before the last pass's tokens ran out
        (`dropped` of them are not part of it). The batch's cache holds every token it returned, the last one
        included; so does this one afterwards (the pending token is fed in one more pass when it was kept).
        """
        import mlx.core as mx

        if dropped:
            del self.tokens[-dropped:]
            self._trim(dropped - 1)  # the last produced token was never fed
        else:
            self.model(mx.array(self.tokens[-1:], dtype=mx.int32)[None], cache=self.cache)
            mx.eval([layer.state for layer in self.cache])
        return self.tokens

    def _trim(self, count: int) -> None:
        if count > 0:
            for layer in self.cache:
                layer.trim(count)


def can_speculate(cache: Sequence[Any]) -> bool:
    """True when every layer's cache is mlx-lm's plain `KVCache`, whose `trim` drops the last positions."""
    from mlx_lm.models.cache import KVCache

    return bool(cache) and all(type(layer) is KVCache for layer in cache)
