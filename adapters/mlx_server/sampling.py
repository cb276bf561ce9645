"""Request sampling settings, and their translation into mlx-lm's sampler and logits processors.

Penalties and biases always go through `mlx_lm.sample_utils` (`make_sampler`, `make_logits_processors`);
they are never passed to mlx-lm's generate functions as keywords, whose names change between releases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mlx.core as mx

Sampler = Callable[["mx.array"], "mx.array"]
LogitsProcessor = Callable[["mx.array", "mx.array"], "mx.array"]

# mlx-lm's default window for the repetition, presence and frequency penalties.
DEFAULT_PENALTY_CONTEXT = 20


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. Defaults are greedy decoding with no penalties."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    repetition_penalty: float | None = None
    repetition_context_size: int = DEFAULT_PENALTY_CONTEXT
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keywords for `mlx_lm.sample_utils.make_sampler`."""
        return {
            "temp": self.temperature,
            # mlx-lm treats top_p outside (0, 1) as "off"; 1.0 from a client means the same.
            "top_p": self.top_p if 0.0 < self.top_p < 1.0 else 0.0,
            "top_k": self.top_k,
            "min_p": self.min_p,
        }

    def processor_kwargs(self) -> dict[str, Any]:
        """Keywords for `mlx_lm.sample_utils.make_logits_processors`; all penalties share one window."""
        repetition = self.repetition_penalty if self.repetition_penalty not in (None, 1.0) else None
        return {
            "logit_bias": dict(self.logit_bias) or None,
            "repetition_penalty": repetition,
            "repetition_context_size": self.repetition_context_size,
            "presence_penalty": self.presence_penalty or None,
            "presence_context_size": self.repetition_context_size,
            "frequency_penalty": self.frequency_penalty or None,
            "frequency_context_size": self.repetition_context_size,
        }


def parse_logit_bias(raw: Mapping[str, float] | None, vocab_size: int) -> dict[int, float]:
    """OpenAI's `{"token id": bias}` as integer ids. Raises ValueError for ids outside the vocabulary."""
    bias: dict[int, float] = {}
    for key, value in (raw or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise ValueError(f"logit_bias key {key!r} is not a token id") from None
        if not 0 <= token < vocab_size:
            raise ValueError(f"logit_bias token id {token} is outside the vocabulary (0-{vocab_size - 1})")
        bias[token] = float(value)
    return bias


def build_sampling(params: SamplingParams) -> tuple[Sampler, list[LogitsProcessor]]:
    """The sampler and logits processors for one request. Call on the thread that generates."""
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    sampler: Sampler = make_sampler(**params.sampler_kwargs())
    processors: list[LogitsProcessor] = make_logits_processors(**params.processor_kwargs())
    return sampler, processors
