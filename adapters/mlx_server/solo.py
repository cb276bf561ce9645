"""One request alone, start to end: for what cannot join mlx-lm's batch.

Two kinds of request run here, while no batch runs: those for a model whose KV cache cannot be merged
into a batch (`LoadedModel.batching` says why), and those with a `seed` — their sampling must draw from the
random state the seed set, which a batch would share with other requests. The cache is written in place,
so the prompt cache lends it with move-or-copy rules (`borrow=False`).
"""

from __future__ import annotations

from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.generation import FedTokens, generate_tokens
from adapters.mlx_server.jobs import Job
from adapters.mlx_server.prompt_cache import PromptCacheStore, cache_key
from adapters.mlx_server.reply import Reply
from adapters.mlx_server.sampling import build_sampling

# Longest the generation thread waits, after handing over the first text of a reply, for the event loop to
# take it before queuing the next step. Queued at once, that step's graph building (GIL) and its compute (every
# core) held back the loop that sends the first token (measured: 1.2 ms median, 4-5 ms one time in ten, on
# a 2-core CPU). Taking it takes well under a millisecond; the cap only matters when the loop is busy.
FIRST_TEXT_HANDOFF_S = 0.02


def run_solo(job: Job, store: PromptCacheStore, config: ServerConfig) -> None:
    """Generate `job`'s whole reply on this (the generation) thread, emitting its events as it goes."""
    import mlx.core as mx

    request = job.request
    if request.sampling.seed is not None:
        mx.random.seed(request.sampling.seed)
    sampler, processors = build_sampling(request.sampling)
    key = cache_key(request.model.alias, request.cache_namespace)
    lease = store.fetch(key, request.model.model, request.prompt_tokens, owner=request.owner)
    reply = Reply(job, lease.reused)
    sampled: list[int] = []  # every token the loop yielded, kept or not (a cancelled one may be fed)
    fed = FedTokens()
    finish = "length"
    tokens = generate_tokens(
        request.model.model,
        request.prompt_tokens,
        lease.cache,
        reused=lease.reused,
        sampler=sampler,
        processors=processors,
        max_tokens=request.max_tokens,
        prefill_step=config.prefill_step,
        cancelled=lambda: job.cancelled,
        fed=fed,
        logits_of=request.model.last_logits,
        progress=reply.progress,
    )
    try:
        for token in tokens:
            sampled.append(token)
            if job.cancelled:
                break
            if reply.add(token):
                finish = "stop"
                break
            if len(sampled) == 1:
                # The first text goes out before the next step is queued (see FIRST_TEXT_HANDOFF_S).
                job.wait_first_text_taken(FIRST_TEXT_HANDOFF_S)
    finally:
        # Closing drops the step queued ahead; the cache may already hold its token (see below).
        tokens.close()
    # The cache holds exactly the tokens fed: never claim one it lacks (a later request would reuse keys that
    # are not there) nor miss one it has (its keys would sit under the wrong token).
    held = (request.prompt_tokens + sampled)[: fed.count]
    if fed.count == lease.reused:
        store.release(lease)  # nothing was written into it
    elif len(held) == fed.count:
        store.store(lease, held, lease.cache)
    # else it holds a token that was never read: it is dropped (a slot it was moved out of with it).
    reply.finish("cancelled" if job.cancelled else finish)
