"""`remote`: a server someone else runs (LM Studio, OpenRouter, a vLLM or SGLang cluster).

Nothing is spawned; the supervisor only probes `{baseUrl}/models`, with the entry's key as a
bearer token when it has one (`"apiKey": "${OPENROUTER_API_KEY}"` keeps it out of the file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from adapters.base import AdapterError, ApiKind, Check, CheckStatus, LaunchSpec, Probe, url_spec

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config


def auth_headers(entry: BackendConfig) -> dict[str, str]:
    key = entry.api_key.get_secret_value() if entry.api_key else ""
    return {"Authorization": f"Bearer {key}"} if key else {}


def require_base_url(name: str, entry: BackendConfig) -> str:
    url = (entry.base_url or "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        example = "http://127.0.0.1:1234/v1 for LM Studio, https://openrouter.ai/api/v1"
        raise AdapterError(f"backends.{name}.baseUrl is required: an http(s) URL ending in /v1 ({example})")
    return url


class RemoteAdapter:
    kind = "remote"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        base_url = require_base_url(name, entry)
        probe = Probe(f"{base_url}{entry.health_path or '/models'}", headers=auth_headers(entry))
        return url_spec(
            name,
            self.kind,
            entry,
            base_url,
            ApiKind.OPENAI,
            probe,
            model_name=entry.model,
            context_length=entry.context_length,
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        try:
            base_url = require_base_url(name, entry)
        except AdapterError as exc:
            return [Check("remote.base-url", CheckStatus.FAIL, str(exc), 'Set "baseUrl".')]
        found = [Check("remote.base-url", CheckStatus.OK, f"probes {base_url}/models")]
        parts = urlsplit(base_url)
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1") and entry.api_key:
            found.append(
                Check(
                    "remote.tls",
                    CheckStatus.WARN,
                    f"the key would cross the network unencrypted to {parts.hostname}",
                    "Use an https:// baseUrl.",
                )
            )
        if "openrouter.ai" in (parts.hostname or "") and not entry.api_key:
            found.append(
                Check(
                    "remote.api-key",
                    CheckStatus.FAIL,
                    "OpenRouter needs a key and apiKey is empty",
                    'Set "apiKey": "${OPENROUTER_API_KEY}" and export OPENROUTER_API_KEY.',
                )
            )
        return found
