"""One model's running batch: mlx-lm's `BatchGenerator`, fed requests that start from their cached prefixes.

mlx-lm does the batching: requests join at the next step and leave when done, each with its own sampler,
logits processors (their token context is the whole history, cached prefix included: it is passed as
`all_tokens`), `max_tokens` and end-of-sequence stops; prompts are prefilled in chunks between decode steps.
What this module adds:

- **The prompt cache.** A request is admitted with a lease on the longest cached prefix of its prompt
  (borrowed: the batch copies it) and, when it ends, its cache goes back to the store holding the prompt and
  the reply, for the next turn. A request that is cancelled or stopped early gives back what it computed
  too, a partial prefill included: a client retrying a long prompt starts where the first try got to.
- **Shared prefixes are computed once.** A prompt with at least `SHARED_PREFIX_MIN` new tokens is kept as a
  checkpoint when its prefill ends, and a request sharing that much of it with one still prefilling waits
  for that checkpoint (`waits_for_shared_prefix`) rather than computing the same keys alongside it: Claude
  Code starts parallel subagents with one long system prompt and the same tools.
- **Prefill that does not freeze decoding.** While requests decode, each prefill chunk is sized from the
  measured prefill rate to take about `PREFILL_SLICE_S`, so a long prompt arriving mid-reply costs the
  running streams a pause per step, not the whole prefill.
- **Text-level stop sequences**, prefill progress and the client-facing text, through `reply.Reply`.
- **Speculative decoding from the prompt** (`speculative.py`) for a request decoding alone: it leaves mlx-lm's
  batch with its cache while a draft is to be had and drafting pays, and goes back in when another request
  is admitted (mlx-lm's batch steps every row one token at a time: see `speculative.py` for why).

Everything here runs on the generation thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.mlx_server.cache_mlx import MlxCacheOps
from adapters.mlx_server.cache_slots import Lease, common_prefix
from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.heads import full_call
from adapters.mlx_server.jobs import Failed, Job
from adapters.mlx_server.pool import LoadedModel
from adapters.mlx_server.prompt_cache import KVCache, PromptCacheStore, cache_key
from adapters.mlx_server.reply import Reply
from adapters.mlx_server.sampling import LogitsProcessor, Sampler, build_sampling
from adapters.mlx_server.speculative import (
    IDLE_PAUSE,
    IDLE_STEPS,
    NGRAM_ENTER,
    DraftPolicy,
    LoneDecoder,
    NgramDrafter,
    can_speculate,
)

log = logging.getLogger("anyclaude.mlx_server")

# While other requests decode, a prefill chunk is sized to take about this long: each decode step then waits
# at most this for the prefill beside it, and the prompt still advances by a useful chunk per step.
PREFILL_SLICE_S = 0.25
# The smallest chunk worth a pass over the weights, and the first guess before a rate is measured.
MIN_PREFILL_SLICE = 32
FIRST_PREFILL_SLICE = 128
# New prompt tokens from which a finished prefill is kept as a checkpoint for requests sharing the prefix
# (a copy of the prompt's keys; below this, recomputing them costs less than the copy and its memory).
SHARED_PREFIX_MIN = 256
_RATE_SMOOTHING = 0.3


@dataclass
class StepResult:
    """What one step did to the requests: whose first text went out, which ended."""

    first_texts: list[Job] = field(default_factory=list)
    finished: list[Job] = field(default_factory=list)


@dataclass
class _Running:
    job: Job
    key: str
    lease: Lease[KVCache]
    reply: Reply
    sampler: Sampler
    processors: list[LogitsProcessor]
    decoding: bool = False
    checkpointed: bool = False  # its prefill was already offered to the prompt cache
    reply_tokens: list[int] = field(default_factory=list)  # every token handed to `reply`
    # Speculative decoding (built when the request first decodes alone): its drafter, its policy, and its
    # decoder while it decodes outside the batch.
    drafter: NgramDrafter | None = None
    policy: DraftPolicy = field(default_factory=DraftPolicy)
    lone: LoneDecoder | None = None
    idle_steps: int = 0


class BatchRunner:
    """Admit jobs (`waits_for_shared_prefix`, then `admit`), then `step` while `running`.

    The engine decides when a job may start (its concurrency limits); this class starts it and runs the batch.
    """

    def __init__(self, loaded: LoadedModel, store: PromptCacheStore, config: ServerConfig, stream: Any) -> None:
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.models.cache import make_prompt_cache

        self.model = loaded.model
        self.alias = loaded.alias
        self._store = store
        self._config = config
        self._gen = BatchGenerator(
            loaded.model,
            max_tokens=config.default_max_tokens,
            stop_tokens=[[token] for token in loaded.tokenizer.eos_token_ids],
            completion_batch_size=config.decode_concurrency,
            prefill_batch_size=config.prefill_concurrency,
            prefill_step_size=config.prefill_step,
            stream=stream,
        )
        self._running: dict[int, _Running] = {}
        self._prefill_rate: float | None = None  # prompt tokens per second, smoothed
        self._speculative = config.speculative == "ngram" and can_speculate(make_prompt_cache(loaded.model))
        if config.speculative == "ngram" and not self._speculative:
            log.warning(
                "speculative decoding off for %s: its KV cache cannot drop positions (sliding-window or recurrent "
                "layers)",
                self.alias,
            )
        self._lone_uid: int | None = None  # the request decoding outside the batch (speculative decoding)
        self._next_uid = -1  # keys for requests outside the batch (mlx-lm's own uids count up from 0)
        self.speculation = DraftPolicy()  # totals over this runner's requests (drafted, accepted, steps, produced)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def prefilling(self) -> int:
        return sum(not run.decoding for run in self._running.values())

    def waits_for_shared_prefix(self, job: Job, planned: Sequence[Job] = ()) -> bool:
        """True while a request prefilling (or `planned` to start with `job`) computes a long prefix of `job`'s
        prompt that the prompt cache lacks: `job` then waits for the checkpoint instead of computing it too."""
        key = cache_key(job.request.model.alias, job.request.cache_namespace)
        prompt = job.request.prompt_tokens
        others = [(run.job, run.lease.reused) for run in self._running.values() if not run.decoding and run.key == key]
        for other in planned:
            if cache_key(other.request.model.alias, other.request.cache_namespace) == key:
                others.append((other, self._store.reusable(key, other.request.prompt_tokens)))
        have: int | None = None  # what the cache gives `job` now: looked up only for a long shared prefix
        for other, reused in others:
            theirs = other.request.prompt_tokens
            if len(theirs) - reused < SHARED_PREFIX_MIN:
                continue  # no checkpoint will come of it
            shared = min(common_prefix(theirs, prompt), len(prompt) - 1)
            if shared < SHARED_PREFIX_MIN:
                continue
            if have is None:
                have = self._store.reusable(key, prompt)
            if shared - have >= SHARED_PREFIX_MIN:
                return True
        return False

    def admit(self, job: Job, together: bool = False) -> StepResult:
        """Start `job` from its longest cached prefix; it joins the batch at the next step.

        A prompt whose new part fits in one prefill chunk gets its first token here, in one forward pass with
        the sampling (see `_first_token`), unless it starts `together` with others: then mlx-lm prefills them
        as one batch and they decode in step. The result says whether its first text went out, or it ended.
        """
        self._back_to_batch()  # the request decoding alone rejoins the batch, to decode beside this one
        request = job.request
        key = cache_key(request.model.alias, request.cache_namespace)
        prompt = request.prompt_tokens
        lease = self._store.fetch(key, request.model.model, prompt, owner=request.owner, borrow=True)
        sampler, processors = build_sampling(request.sampling)
        reply = Reply(job, lease.reused)
        run = _Running(job, key, lease, reply, sampler, processors)
        decoding = any(other.decoding for other in self._running.values())
        if together or len(prompt) - lease.reused > (self._prefill_slice() if decoding else self._config.prefill_step):
            (uid,) = self._gen.insert_segments(
                [[prompt[lease.reused :]]],
                max_tokens=[request.max_tokens],
                caches=[lease.cache],
                all_tokens=[prompt[: lease.reused]],
                samplers=[sampler],
                logits_processors=[processors],
            )
            self._running[uid] = run
            return StepResult()
        cache, first = self._first_token(run, sampler, processors)
        run.reply_tokens.append(first)
        ended = reply.add(first) or request.max_tokens == 1 or job.cancelled
        result = StepResult(first_texts=[job] if job.text_emitted else [])
        if ended:
            self._store.store(lease, prompt, cache)  # the first token was never fed: the cache holds the prompt
            reply.finish("length")
            result.finished.append(job)
            return result
        if len(prompt) - lease.reused >= SHARED_PREFIX_MIN:
            # The batch only copies `cache`, so the checkpoint can keep this very one (see `_prefilled`).
            self._store.checkpoint(lease, prompt, cache)
        run.checkpointed = True
        (uid,) = self._gen.insert_segments(
            [[[first]]],
            max_tokens=[request.max_tokens - 1],
            caches=[cache],
            all_tokens=[list(prompt)],  # mlx-lm appends to this list: never hand it the request's own
            samplers=[sampler],
            logits_processors=[processors],
        )
        run.decoding = True
        self._running[uid] = run
        return result

    def _first_token(self, run: _Running, sampler: Any, processors: list[Any]) -> tuple[KVCache, int]:
        """Prefill the rest of the prompt in one pass and sample the first token from its last position.

        mlx-lm's batch prefills all but the last prompt token, then feeds that one alone in a decode step: a
        second pass over the weights, which is most of the time to the first token when the cache supplied
        nearly all of the prompt (a follow-up turn, a side request). The cache is a writable copy of the lent
        prefix (views: nothing is copied until written); the batch then copies it in, holding the prompt.
        """
        import mlx.core as mx

        prompt = run.job.request.prompt_tokens
        reused = run.lease.reused
        cache = MlxCacheOps().copy_prefix(run.lease.cache, reused, reused)
        logits_of = run.job.request.model.last_logits or full_call(self.model)
        logits = logits_of(mx.array(prompt[reused:], dtype=mx.int32)[None], cache)
        if processors:  # e.g. a repetition penalty: over the whole prompt, cached part included
            history = mx.array(prompt, dtype=mx.int32)
            for processor in processors:
                logits = processor(history, logits)
        token = sampler(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        return cache, int(token.item())

    def step(self) -> StepResult:
        """One batch step (a decode step for the decoding requests, a prefill chunk for the others).

        Raises what mlx-lm raised; the runner must then be dropped after `fail_all`.
        """
        if self._lone_uid is not None:
            return self._lone_step()
        result = StepResult()
        decoding = any(run.decoding for run in self._running.values())
        self._gen.prefill_step_size = self._prefill_slice() if decoding else self._config.prefill_step
        with self._gen.stats() as stats:
            prompt_responses, generation_responses = self._gen.next()  # type: ignore[no-untyped-call]
        if stats.prompt_tokens and stats.prompt_time > 0:
            rate = stats.prompt_tokens / stats.prompt_time
            previous = self._prefill_rate
            self._prefill_rate = rate if previous is None else previous + _RATE_SMOOTHING * (rate - previous)
        for response in prompt_responses:
            if (run := self._running.get(response.uid)) is not None:
                self._prefilled(response.uid, run, run.lease.reused + int(response.progress[0]), response.end_of_prompt)
        ended: list[int] = []
        for response in generation_responses:
            run = self._running.get(response.uid)
            if run is None:
                continue
            had_text = run.job.text_emitted
            run.reply_tokens.append(int(response.token))
            complete = run.reply.add(int(response.token))
            if response.finish_reason is not None:
                self._end(response.uid, response.finish_reason, response.all_tokens, response.prompt_cache)
                result.finished.append(run.job)
            elif complete:
                ended.append(response.uid)  # a stop sequence matched: mlx-lm does not know those
            if not had_text and run.job.text_emitted:
                result.first_texts.append(run.job)
        ended += [uid for uid, run in self._running.items() if run.job.cancelled and uid not in ended]
        if ended:
            result.finished += [self._running[uid].job for uid in ended]
            self._remove(ended, "stop")
        self._maybe_alone()
        return result

    def cancel_all(self) -> None:
        """End every request now, keeping what each computed in the prompt cache (shutdown)."""
        for run in self._running.values():
            run.job.cancel()
        if self._lone_uid is not None:
            self._end_lone(0, "cancelled")
        if self._running:
            self._remove(list(self._running), "cancelled")

    def fail_all(self, message: str) -> list[Job]:
        """Fail every request (the batch raised) and return their jobs; the caller drops this runner."""
        jobs = [run.job for run in self._running.values()]
        for job in jobs:
            job.emit(Failed(message))
        self._running.clear()
        return jobs

    def _prefilled(self, uid: int, run: _Running, processed: int, done: bool) -> None:
        if not done:
            run.reply.progress(processed)
            return
        run.decoding = True
        prompt = run.job.request.prompt_tokens
        if not run.checkpointed and len(prompt) - run.lease.reused >= SHARED_PREFIX_MIN:
            for cache, tokens in self._gen.extract_cache([uid]).values():  # type: ignore[no-untyped-call]
                self._store.checkpoint(run.lease, list(tokens), cache)

    def _remove(self, uids: list[int], reason: str) -> None:
        caches = self._gen.remove(uids, return_prompt_caches=True)  # type: ignore[no-untyped-call]
        for uid in uids:
            cache, tokens = caches.get(uid, (None, []))
            self._end(uid, reason, tokens, cache)

    def _end(self, uid: int, reason: str, tokens: list[int], cache: KVCache | None) -> None:
        run = self._running.pop(uid)
        if cache is not None and len(tokens) > run.lease.reused:
            self._store.store(run.lease, list(tokens), cache)
        else:
            self._store.release(run.lease)
        run.reply.finish(reason)

    # ---- speculative decoding: one request decoding alone (see speculative.py) ----

    def _maybe_alone(self) -> None:
        """Take the one request decoding in this batch out of it, when a draft is to be had and drafting pays."""
        if not self._speculative or len(self._running) != 1:
            return
        ((uid, run),) = self._running.items()
        if not run.decoding or run.job.cancelled or len(run.reply_tokens) < run.policy.paused_until:
            return
        remaining = run.job.request.max_tokens - len(run.reply_tokens)
        if remaining < 2:
            return
        if run.drafter is None:
            run.drafter = NgramDrafter(run.job.request.prompt_tokens + run.reply_tokens)
        else:
            run.drafter.extend(run.reply_tokens[len(run.drafter.tokens) - len(run.job.request.prompt_tokens) :])
        if not run.drafter.draft(1, min_n=NGRAM_ENTER):
            return
        caches = self._gen.remove([uid], return_prompt_caches=True)  # type: ignore[no-untyped-call]
        cache, tokens = caches[uid]
        tokens = list(tokens)
        # The batch's cache holds every token it returned; the last one becomes the pending, unfed one again
        # (the batch's sample after it, not yet returned, is dropped: the first pass here samples it anew).
        for layer in cache:
            layer.trim(1)
        del self._running[uid]
        self._lone_uid = self._next_uid
        self._next_uid -= 1
        self._running[self._lone_uid] = run
        run.lone = LoneDecoder(self.model, cache, tokens, run.sampler, run.processors)
        run.checkpointed = True
        run.idle_steps = 0
        if len(tokens) != len(run.drafter.tokens):  # the batch's history is not prompt + reply: never guess
            log.warning("speculative decoding off for %s: the batch's token history is not the reply's", self.alias)
            self._speculative = False
            self._back_to_batch()

    def _lone_step(self) -> StepResult:
        assert self._lone_uid is not None
        run = self._running[self._lone_uid]
        assert run.lone is not None and run.drafter is not None
        result = StepResult()
        request = run.job.request
        if run.job.cancelled:
            self._end_lone(0, "stop")
            result.finished.append(run.job)
            return result
        remaining = request.max_tokens - len(run.reply_tokens)
        draft = run.drafter.draft(min(run.policy.length, remaining - 1))
        verified = run.lone.step(draft)
        run.policy.record(len(draft), verified.accepted, len(verified.tokens))
        self.speculation.record(len(draft), verified.accepted, len(verified.tokens))
        had_text = run.job.text_emitted
        for taken, token in enumerate(verified.tokens, start=1):
            run.reply_tokens.append(token)
            run.drafter.extend((token,))
            complete = run.reply.add(token)
            if complete or len(run.reply_tokens) >= request.max_tokens or run.job.cancelled:
                self._end_lone(len(verified.tokens) - taken, "stop" if complete else "length")
                result.finished.append(run.job)
                break
        else:
            run.idle_steps = 0 if draft else run.idle_steps + 1
            if not run.policy.pays():
                run.policy.pause(len(run.reply_tokens))
                self._back_to_batch()
            elif run.idle_steps >= IDLE_STEPS:
                run.policy.paused_until = len(run.reply_tokens) + IDLE_PAUSE
                self._back_to_batch()
        if not had_text and run.job.text_emitted:
            result.first_texts.append(run.job)
        return result

    def _end_lone(self, dropped: int, reason: str) -> None:
        assert self._lone_uid is not None
        uid, self._lone_uid = self._lone_uid, None
        lone = self._running[uid].lone
        assert lone is not None
        self._running[uid].lone = None
        tokens = lone.settle(dropped)
        self._end(uid, reason, tokens, lone.cache)

    def _back_to_batch(self) -> None:
        """The request decoding alone rejoins mlx-lm's batch with its cache; its pending token is fed there."""
        if self._lone_uid is None:
            return
        run = self._running[self._lone_uid]
        lone = run.lone
        assert lone is not None
        (uid,) = self._gen.insert_segments(
            [[lone.tokens[-1:]]],
            max_tokens=[run.job.request.max_tokens - len(run.reply_tokens)],
            caches=[lone.cache],
            all_tokens=[lone.tokens[:-1]],
            samplers=[run.sampler],
            logits_processors=[run.processors],
        )
        del self._running[self._lone_uid]
        self._lone_uid = None
        run.lone = None
        self._running[uid] = run

    def _prefill_slice(self) -> int:
        """Prompt tokens per prefilling request for the next chunk while others decode."""
        if self._prefill_rate is None:
            return FIRST_PREFILL_SLICE
        share = self._prefill_rate * PREFILL_SLICE_S / max(1, self.prefilling)
        return int(min(max(share, MIN_PREFILL_SLICE), self._config.prefill_step))
