"""The proxy's settings, resolved once from the config and passed down by value."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_pattern(model: str) -> bool:
    """Whether a `models` key is a glob (`claude-*`) rather than one model id."""
    return any(ch in model for ch in "*?[")


@dataclass(frozen=True)
class ProxyOptions:
    """How the proxy behaves; every default is what a local setup wants.

    Attributes:
        host: the address the proxy is bound to; on loopback only loopback Host headers are served.
        api_key: the key clients must send (`x-api-key` or `Authorization: Bearer`); None: no check.
        cors_origins: origins allowed by CORS; none by default (no browser page may call the proxy).
        log_bodies: log request bodies at DEBUG (off: prompts are private).
        max_body_bytes: larger bodies get 413 (Claude Code's largest are a few MB with images).
        models: Claude model id (or fnmatch pattern) → backend model; unmatched ids use the backend's.
        first_byte_timeout: seconds to wait for the first chunk; a cold prefill of a 20k-token
            prompt on a CPU takes minutes.
        idle_timeout: seconds without a chunk, once generation started, before the stream is failed.
        ping_interval: seconds without a chunk before a `ping` event keeps the client's timer alive.
        parse_text_tool_calls: turn tool-call markup leaked into text back into tool calls.
        strip_billing_header: remove Claude Code's per-conversation billing line (cache hygiene).
    """

    host: str = "127.0.0.1"
    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    log_bodies: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    models: Mapping[str, str] = field(default_factory=dict)
    first_byte_timeout: float = 600.0
    idle_timeout: float = 120.0
    ping_interval: float = 5.0
    parse_text_tool_calls: bool = True
    strip_billing_header: bool = True

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def backend_model(self, requested: str, default: str | None) -> str | None:
        """The model name to send for the client's `requested` id."""
        if requested in self.models:
            return self.models[requested]
        for pattern, target in self.models.items():
            if is_pattern(pattern) and fnmatch.fnmatchcase(requested, pattern):
                return target
        return default
