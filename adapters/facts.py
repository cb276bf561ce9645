"""The facts of a backend's model, resolved once per backend into one record that every reader takes:
the proxy (context window, output cap), our MLX server's arguments (window, sampling) and Claude Code's
environment (served name, window, output cap).

Where each fact comes from, first found wins: the backend entry's key, then the model folder's own
`anyclaude.json` (the facts that travel with the folder, e.g. the demo model's output cap and
sampling), then the folder's `config.json` (`max_position_embeddings`). A window the folder's
`anyclaude.json` names is the most the model can hold: an entry claiming more is held to it.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.config import BackendConfig

log = logging.getLogger("anyclaude.facts")

FACTS_FILE = "anyclaude.json"
# The keys a folder's facts file may carry, as in a backend entry, with their types.
_FOLDER_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "contextLength": ("context_length", int),
    "maxOutputTokens": ("max_output_tokens", int),
    "temperature": ("temperature", (int, float)),
    "topP": ("top_p", (int, float)),
}


# Below this many parameters a model is small: the 0.5B-3B coders that run on a laptop's CPU or a base Mac.
SMALL_MODEL_PARAMS = 4_000_000_000
# Claude Code's full prompt (~20k tokens) plus a working conversation needs at least this window.
SMALL_WINDOW = 32_768


@dataclass(frozen=True)
class ModelFacts:
    """What is known of one backend's model; None where nothing says."""

    context_length: int | None = None
    served_name: str | None = None  # the name the backend serves the model under
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    calls_tools: bool | None = None
    params: int | None = None  # parameter count of a local model folder

    @property
    def small(self) -> bool:
        """A model that cannot carry Claude Code's full prompt: few parameters or a small window.

        Measured (bench/agent.py, launcher/claude_fit.py): Qwen2.5-Coder-1.5B calls tools on a ~1,800-token
        prompt and mostly refuses at ~3,400; Claude Code's full prompt is ~19,400 tokens."""
        few = self.params is not None and self.params < SMALL_MODEL_PARAMS
        return few or (self.context_length is not None and self.context_length < SMALL_WINDOW)


def folder_facts(model: str | None) -> dict[str, Any]:
    """The entry keys (snake_case) a local model folder's `anyclaude.json` gives; {} when none."""
    if not model:
        return {}
    path = Path(model).expanduser() / FACTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s); the model's own facts are ignored", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[str, Any] = {}
    for key, (field, kind) in _FOLDER_KEYS.items():
        value = data.get(key)
        if isinstance(value, int | float) and isinstance(value, kind) and not isinstance(value, bool) and value > 0:
            found[field] = value
    return found


def write_folder_facts(folder: Path, **facts: int | float) -> None:
    """Record facts (camelCase keys, as in a backend entry) in a model folder's `anyclaude.json`."""
    (folder / FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")


def with_folder_facts(entry: BackendConfig) -> BackendConfig:
    """The entry with what its model folder says filled in where the entry is silent, and its window
    held to the folder's. The entry every part of a launch reads (adapters, our server's config)."""
    own = folder_facts(entry.model)
    if not own:
        return entry
    update = {field: value for field, value in own.items() if getattr(entry, field) is None}
    window = own.get("context_length")
    if window and entry.context_length and entry.context_length > window:
        log.warning(
            "contextLength %d is more than %s holds (%d, from its %s); using %d",
            entry.context_length,
            entry.model,
            window,
            FACTS_FILE,
            window,
        )
        update["context_length"] = window
    return entry.model_copy(update=update) if update else entry


def model_facts(entry: BackendConfig) -> ModelFacts:
    """The facts of the entry's model (the entry as `with_folder_facts` completed it)."""
    from adapters.capabilities import tool_support

    name = entry.model_alias or (Path(entry.model).name or entry.model if entry.model else None)
    return ModelFacts(
        context_length=entry.context_length or model_context_length(entry.model),
        served_name=name,
        max_output_tokens=entry.max_output_tokens,
        temperature=entry.temperature,
        top_p=entry.top_p,
        calls_tools=tool_support(entry.model).can_call,
        params=model_params(entry.model),
    )


def model_params(model: str | None) -> int | None:
    """The parameter count of a local model folder, from its safetensors headers; None when it cannot be read."""
    if not model:
        return None
    folder = Path(model).expanduser()
    total = 0
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with file.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                count = 1
                for dim in info.get("shape", []):
                    count *= int(dim)
                total += count
    return total or None


def model_config(model: str | None) -> dict[str, Any] | None:
    """A local model folder's config.json, or None (no folder, unreadable, not an object)."""
    if not model:
        return None
    try:
        data = json.loads((Path(model).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_context_length(model: str | None) -> int | None:
    """`max_position_embeddings` from a local model folder's config.json, if there is one."""
    value = (model_config(model) or {}).get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None
