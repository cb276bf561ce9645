"""One request's reply as its tokens come in: detokenized, stop sequences cut, text sent, figures logged.

Both ways of generating (the batch and one at a time) feed sampled token ids to a `Reply` and end it
with `finish`; so they agree on what a client sees: end-of-sequence tokens are never decoded, text that may
be the start of a stop sequence is held back, the stop sequence that ended a reply is reported, and a reply
cut inside a multibyte character ends before it.
"""

from __future__ import annotations

import logging
import time

from adapters.mlx_server.jobs import Finished, Job, Prefill, TextChunk, Usage
from adapters.mlx_server.stops import StopMatcher

log = logging.getLogger("anyclaude.mlx_server")


class Reply:
    """Feed `add(token)` for every sampled token; then `finish` once.

    Args:
        job: where text and the final event go.
        cached_tokens: prompt tokens the prompt cache supplied.
    """

    def __init__(self, job: Job, cached_tokens: int) -> None:
        request = job.request
        self.job = job
        self.cached_tokens = cached_tokens
        self.generated = 0
        self._detokenizer = request.model.tokenizer.detokenizer
        self._eos = set(request.model.tokenizer.eos_token_ids)
        self._stops = StopMatcher(request.stops)
        self._ended_by: str | None = None  # "eos" or "stop_sequence"
        self._admitted = time.perf_counter()
        self._first_token_at: float | None = None
        job.emit(Prefill(len(request.prompt_tokens), cached_tokens, cached_tokens))

    @property
    def prompt_tokens(self) -> int:
        return len(self.job.request.prompt_tokens)

    def progress(self, processed: int) -> None:
        """The prompt's keys are computed up to `processed` tokens (the cached ones included)."""
        self.job.emit(Prefill(self.prompt_tokens, self.cached_tokens, processed))

    def add(self, token: int) -> bool:
        """One sampled token; True when the reply is complete (end of sequence, or a stop sequence matched)."""
        if self._first_token_at is None:
            self._first_token_at = time.perf_counter()
        if self._ended_by is not None:
            return True
        self.generated += 1
        if token in self._eos:
            self._ended_by = "eos"
            return True
        self._detokenizer.add_token(token)
        if self._send(self._detokenizer.last_segment):
            self._ended_by = "stop_sequence"
        return self._ended_by is not None

    def finish(self, reason: str) -> None:
        """End the reply: `reason` is "length", "stop" or "cancelled" as the generator saw it.

        A reply a stop sequence or end-of-sequence token ended is "stop" whatever the generator said.
        """
        if self._ended_by is None and reason != "cancelled":
            self._detokenizer.finalize()
            if self._send(_whole_characters(self._detokenizer.last_segment)):
                self._ended_by = "stop_sequence"
            elif tail := self._stops.flush():
                self.job.emit(TextChunk(tail))
        if self.job.cancelled:
            reason = "cancelled"
        elif self._ended_by is not None:
            reason = "stop"
        usage = Usage(self.prompt_tokens, self.generated, self.cached_tokens)
        self.job.emit(Finished(reason, usage, self._stops.matched))
        self._log(reason, usage)

    def _send(self, segment: str) -> bool:
        if not segment:
            return False
        result = self._stops.feed(segment)
        if result.text:
            self.job.emit(TextChunk(result.text))
        return result.stopped

    def _log(self, reason: str, usage: Usage) -> None:
        ended = time.perf_counter()
        first = self._first_token_at or ended
        decode_seconds = ended - first
        rate = (usage.completion_tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0
        log.info(
            "request %s model=%s prompt_tokens=%d cached_tokens=%d prefilled_tokens=%d generated_tokens=%d "
            "ttft=%.3fs tokens_per_s=%.1f queue_wait=%.3fs finish=%s",
            self.job.request.request_id,
            self.job.request.model.alias,
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.prompt_tokens - usage.cached_tokens,
            usage.completion_tokens,
            first - self.job.submitted,
            rate,
            self._admitted - self.job.submitted,
            reason,
        )


def _whole_characters(segment: str) -> str:
    """The last segment of a reply without the bytes of a character it did not finish.

    While tokens come, mlx-lm's detokenizers hold back text that ends inside a character; `finalize` decodes
    what is held with replacement, so a reply cut by `max_tokens` mid-emoji would end in U+FFFD (`'🌟�'`).
    Those trailing replacement characters are dropped. A U+FFFD the model wrote itself at the very end cannot
    be told apart (the detokenizer held it back for the same reason) and is dropped too.
    """
    return segment.rstrip("\ufffd")
