"""Exposure is loud (docs/reliability.md 19): what the config makes reachable beyond this machine, in words.

Binding the proxy beyond loopback is allowed with `apiKey` (config validation insists); a backend
entry bound beyond loopback cannot be given a key by anyclaude at all, since each server decides for
itself whether it asks for one. Either way the person is told, at start and on every config edit that
brings it about, on the terminal and in the log.
"""

from __future__ import annotations

import ipaddress

from adapters.base import LaunchSpec
from launcher.config import Settings


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warnings(settings: Settings, spec: LaunchSpec) -> list[str]:
    """One sentence per exposed listener: the proxy, and the backend anyclaude starts for `spec`."""
    found = []
    config = settings.config
    if not is_loopback(config.host):
        found.append(
            f"The proxy listens on {config.host}:{settings.port}, beyond this machine: anyone who can reach it"
            " and has its apiKey can use your model. Set host to 127.0.0.1 unless other machines must reach it."
        )
    if spec.spawns and not is_loopback(spec.host):
        found.append(
            f"backends.{spec.name}.host is {spec.host}: the {spec.kind} server listens on {spec.host}:{spec.port}"
            " beyond this machine, and anyclaude cannot make it ask for a key: anyone on your network can use the"
            f" model directly, past the proxy's apiKey. Set backends.{spec.name}.host to 127.0.0.1 unless other"
            " machines must reach it."
        )
    return found
