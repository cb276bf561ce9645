"""Token usage: OpenAI's `usage` object → Anthropic's counts.

Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI-style backends report them
inside `prompt_tokens`. Claude Code shows context use from these numbers, so both are kept, and the
same split is reported in `message_start` and in the final `message_delta`. No OpenAI-style backend
reports what it wrote to its cache, so `cache_creation_input_tokens` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def update(self, raw: Any) -> None:
        """Take the backend's counts; a backend that repeats usage in every chunk reports running totals."""
        if not isinstance(raw, dict):
            return
        prompt = _int(raw.get("prompt_tokens"))
        details = raw.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
        if prompt is not None:
            self.cache_read_input_tokens = min(cached or 0, prompt)
            self.input_tokens = prompt - self.cache_read_input_tokens
        completion = _int(raw.get("completion_tokens"))
        if completion is not None:
            self.output_tokens = completion

    def fill_output(self, estimate: int) -> None:
        """A backend that sends no usage: count one token per content chunk, the usual granularity."""
        if self.output_tokens is None:
            self.output_tokens = estimate

    def anthropic(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens or 0,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }
