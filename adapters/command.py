"""`command`: any argv list, with `{port}`, `{host}` and `{model}` filled in.

The escape hatch when a backend's CLI changes: no code change, only a config edit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    Check,
    LaunchSpec,
    fill_placeholders,
    local_server_spec,
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
        return local_server_spec(name, self.kind, entry, port, argv, health_path=DEFAULT_HEALTH_PATH)

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        return []
