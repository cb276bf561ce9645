"""Backend kinds. Each module describes how to launch and probe one kind; none of them spawns."""

from adapters.anthropic import AnthropicAdapter
from adapters.base import REGISTRY, Adapter
from adapters.command import CommandAdapter
from adapters.llama_cpp import LlamaCppAdapter
from adapters.mistralrs import MistralrsAdapter
from adapters.mlx_lm import MlxLmAdapter
from adapters.mlx_server.adapter import MlxServerAdapter
from adapters.mlx_textgen import MlxTextgenAdapter
from adapters.remote import RemoteAdapter
from adapters.script import ScriptAdapter

for _adapter in (
    CommandAdapter(),
    ScriptAdapter(),
    MlxServerAdapter(),
    MlxLmAdapter(),
    MlxTextgenAdapter(),
    MistralrsAdapter(),
    LlamaCppAdapter(),
    RemoteAdapter(),
    AnthropicAdapter(),
):
    REGISTRY[_adapter.kind] = _adapter

__all__ = ["REGISTRY", "Adapter"]
