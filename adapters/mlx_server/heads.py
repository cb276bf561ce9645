"""Logits for the last position only: the output head applied to one row instead of a whole chunk.

An mlx-lm model's own call puts every input position through its output head, and the last chunk of a
prompt (up to `prefill_step` positions) goes through `generate_tokens`'s sampling step whole, to read the
weights once rather than twice. Only its last position is sampled, so the head's work on the others is
thrown away: a (positions x hidden) by (hidden x vocabulary) product, the largest matrix of the model
when the vocabulary is large (measured on SmolLM2-135M, CPU: 172 new tokens 734 -> 663 ms).

Most mlx-lm models are an inner stack (`model.model`) that returns hidden states, then a head: `lm_head`,
or the input embedding used as a linear layer when the weights are tied. For those, only the last hidden
state goes through the head. Architectures that do more after the head (logit scaling, soft-capping) or are
built differently are caught by comparing the shortcut with the model's own call once, at load, and keep
the full call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("anyclaude.mlx_server")

# `(inputs, cache) -> logits`: inputs of shape (1, positions), logits of shape (1, vocabulary) for the last one.
LastLogits = Callable[[Any, list[Any]], Any]

# The check compares logits within this tolerance, relative to their largest magnitude: the head applied to
# one row may sum in another order than applied to many (seen: 2e-5 on float32 logits of magnitude ~20).
_TOLERANCE = 1e-3
_PROBE_TOKENS = 4


def full_call(model: Any) -> LastLogits:
    """The model's own call, sliced to the last position (every position goes through the head)."""

    def logits(inputs: Any, cache: list[Any]) -> Any:
        return model(inputs, cache=cache)[:, -1, :]

    return logits


def last_logits(model: Any) -> tuple[LastLogits, bool]:
    """The fastest `(inputs, cache) -> logits` that agrees with `model`'s own call; True if it is the shortcut.

    Runs the model twice on a few tokens with fresh caches (on the calling thread's stream).
    """
    shortcut = _shortcut(model)
    if shortcut is not None and _agrees(model, shortcut):
        return shortcut, True
    return full_call(model), False


def _shortcut(model: Any) -> LastLogits | None:
    inner = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    if head is None:
        head = getattr(getattr(inner, "embed_tokens", None), "as_linear", None)
    if not callable(inner) or not callable(head):
        return None

    def logits(inputs: Any, cache: list[Any]) -> Any:
        hidden = inner(inputs, cache=cache)
        return head(hidden[:, -1:, :])[:, -1, :]

    return logits


def _agrees(model: Any, shortcut: LastLogits) -> bool:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    try:
        probe = mx.arange(1, _PROBE_TOKENS + 1, dtype=mx.int32)[None]
        expected = full_call(model)(probe, make_prompt_cache(model))
        got = shortcut(probe, make_prompt_cache(model))
        if got.shape != expected.shape:
            return False
        scale = max(cast(float, mx.abs(expected).max().item()), 1.0)
        return bool(mx.allclose(got, expected, rtol=0.0, atol=_TOLERANCE * scale).item())
    except Exception as exc:  # an architecture whose parts do not compose like this keeps the full call
        log.debug("last-position logits shortcut unavailable: %s", exc)
        return False
