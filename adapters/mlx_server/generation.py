"""The one-at-a-time token loop: prefill, then sample one token at a time, logits processors seeing everything.

Used for requests that cannot join mlx-lm's batch (`solo.py`): a model whose cache cannot be merged into a
batch, or a request with a `seed`.

mlx-lm's `stream_generate(..., prompt_cache=cache)` gives its logits processors only the tokens it was
handed, not a prefix already in the cache, so a repetition penalty would change once a prompt cache
reuses tokens. This loop keeps the whole history (prompt, reused prefix included, plus every sampled
token) and gives that to the processors. Everything here runs on the generation thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from adapters.mlx_server.heads import LastLogits, full_call
from adapters.mlx_server.sampling import LogitsProcessor, Sampler


@dataclass
class FedTokens:
    """How many tokens the cache holds (the reused prefix included): the tokens a prompt cache may keep.

    Counted as the graph is built, which is when mlx-lm's caches advance their offsets: a token sampled
    last and never fed is not counted; one fed for a step that was queued but never read is.
    """

    count: int = 0


def generate_tokens(
    model: Any,
    prompt: Sequence[int],
    cache: list[Any],
    *,
    reused: int,
    sampler: Sampler,
    processors: Sequence[LogitsProcessor],
    max_tokens: int,
    prefill_step: int,
    cancelled: Callable[[], bool],
    fed: FedTokens | None = None,
    logits_of: LastLogits | None = None,
    progress: Callable[[int], None] | None = None,
) -> Generator[int, None, None]:
    """Yield sampled token ids, at most `max_tokens`.

    Args:
        model: an mlx-lm model.
        prompt: the whole prompt; the first `reused` tokens are already in `cache`.
        cache: per-layer KV cache, extended in place.
        reused: prompt tokens the cache already holds (less than `len(prompt)`).
        sampler, processors: from `sampling.build_sampling`.
        max_tokens: upper bound on yielded tokens (>= 1).
        prefill_step: tokens per prefill chunk; `cancelled` is checked between chunks.
        cancelled: polled during prefill so a disconnected client does not hold the thread for minutes.
        fed: updated with the number of tokens the cache holds, for storing it afterwards.
        logits_of: the last position's logits from `model` (`heads.last_logits`); default the model's own call.
        progress: called with the number of prompt tokens in the cache after each prefill chunk.
    """
    import mlx.core as mx

    if not 0 <= reused < len(prompt):
        raise ValueError(f"reused ({reused}) must be below the prompt length ({len(prompt)})")
    counter = fed if fed is not None else FedTokens()
    last_logits = logits_of or full_call(model)
    counter.count = reused
    history = mx.array(list(prompt), dtype=mx.int32)
    pending = history[reused:]
    # The last chunk (up to `prefill_step` tokens) goes through `step` in one forward pass with the sampling:
    # a separate pass for the final token costs a whole extra read of the weights (a decode step), which
    # dominates when a prompt cache leaves only a few tokens to prefill.
    while pending.size > prefill_step:
        if cancelled():
            return
        chunk = prefill_step
        model(pending[:chunk][None], cache=cache)
        mx.eval([layer.state for layer in cache])
        counter.count += chunk
        pending = pending[chunk:]
        if progress is not None:
            progress(counter.count)

    def step(inputs: mx.array, seen: mx.array) -> mx.array:
        logits = last_logits(inputs[None], cache)
        counter.count += inputs.size
        for processor in processors:
            logits = processor(seen, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return sampler(logprobs).astype(mx.int32)

    token = step(pending, history)
    # The first token is read before the next step is queued: on the CPU, reading it with a step queued
    # behind it waited for that step too (measured: +75 ms, a decode step, on every time to first token).
    yield cast(int, token.item())
    produced = 1
    if produced < max_tokens:
        history = mx.concatenate([history, token])
        token = step(token, history)
        mx.async_eval(token)  # type: ignore[no-untyped-call]
    while produced < max_tokens:
        following = None
        if produced + 1 < max_tokens:
            # Queue the next step before reading this token: the device computes while Python yields.
            history = mx.concatenate([history, token])
            following = step(token, history)
            mx.async_eval(following)  # type: ignore[no-untyped-call]
        yield cast(int, token.item())
        produced += 1
        if following is None:
            return
        token = following
