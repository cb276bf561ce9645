"""`command`: any argv list, with `{port}`, `{host}` and `{model}` filled in.

The escape hatch when a backend's CLI changes: no code change, only a config edit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    ApiKind,
    Check,
    LaunchSpec,
    Probe,
    entry_secrets,
    fill_placeholders,
    local_url,
    require_port,
)

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

DEFAULT_HEALTH_PATH = "/health"


class CommandAdapter:
    kind = "command"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        if not entry.command:
            raise AdapterError(f'backends.{name}.command is required for type "command" (an argv list)')
        port = require_port(name, entry)
        values = {"port": str(port), "host": entry.host, "model": entry.model or ""}
        argv = tuple(fill_placeholders(arg, values) for arg in [*entry.command, *entry.args])
        probe = Probe(local_url(entry, port, entry.health_path or DEFAULT_HEALTH_PATH))
        return LaunchSpec(
            name=name,
            kind=self.kind,
            argv=argv,
            base_url=entry.base_url or local_url(entry, port, "/v1"),
            api=ApiKind.OPENAI,
            readiness=probe,
            liveness=probe,
            env=dict(entry.env),
            host=entry.host,
            port=port,
            secrets=entry_secrets(entry),
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        return []
