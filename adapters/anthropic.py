"""`anthropic`: the real Anthropic API, passed through unchanged (the `claude` mode).

Nothing is spawned and nothing is probed: a readiness probe would spend the person's quota, and
the API's own errors reach Claude Code as they are. The key travels in the client's headers,
which the proxy passes through; `ANTHROPIC_API_KEY` is what Claude Code reads to send one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from adapters.base import ApiKind, Check, CheckStatus, LaunchSpec, url_spec

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

DEFAULT_BASE_URL = "https://api.anthropic.com"
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


class AnthropicAdapter:
    kind = "anthropic"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        base_url = (entry.base_url or DEFAULT_BASE_URL).rstrip("/")
        return url_spec(name, self.kind, entry, base_url, ApiKind.ANTHROPIC, None)

    def checks(
        self, name: str, entry: BackendConfig, config: Config, env: Mapping[str, str] | None = None
    ) -> list[Check]:
        # doctor runs in the shell that will start Claude Code, so its environment is the one that counts.
        seen = os.environ if env is None else env
        if entry.api_key or any(seen.get(var) for var in KEY_VARIABLES):
            return [Check("anthropic.api-key", CheckStatus.OK, "an Anthropic API key is set")]
        return [
            Check(
                "anthropic.api-key",
                CheckStatus.WARN,
                "ANTHROPIC_API_KEY is not set",
                "export ANTHROPIC_API_KEY=... (or log in with `claude` so it uses your subscription)",
            )
        ]
