"""Backend kinds. Each module describes how to launch and probe one kind; none of them spawns."""

from adapters.base import REGISTRY, Adapter
from adapters.command import CommandAdapter
from adapters.script import ScriptAdapter

for _adapter in (CommandAdapter(), ScriptAdapter()):
    REGISTRY[_adapter.kind] = _adapter

__all__ = ["REGISTRY", "Adapter"]
