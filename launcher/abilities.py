"""Saying what the backend's model cannot do, where a person looks: the start line, `status`, `doctor`.

The decision itself lives in `adapters.capabilities` (one place); this module finds the model a backend entry
or a running backend's state file names, and words the finding.
"""

from __future__ import annotations

import os
from pathlib import Path

from adapters.capabilities import NO_TOOLS_FIX, ToolSupport, tool_support
from launcher.config import BackendConfig, parse_config_file
from launcher.errors import ConfigError
from launcher.paths import Home
from launcher.supervision.statefile import BackendRecord

# `status` asks a running MLX server at most this long (seconds); a busy one is answered with `?`.
SERVER_ASK_TIMEOUT = 0.5


def model_name(entry: BackendConfig) -> str | None:
    """The name the backend serves its model under: `modelAlias`, else the model's folder or file name."""
    if entry.model_alias:
        return entry.model_alias
    if not entry.model:
        return None
    return Path(entry.model).name or entry.model


def entry_tools(entry: BackendConfig) -> ToolSupport:
    """Whether the entry's (local) model can call tools."""
    return tool_support(entry.model)


def start_note(entry: BackendConfig) -> str | None:
    """The line the start-up prints when the model cannot call tools; None when it can or nobody can tell."""
    found = entry_tools(entry)
    if found.can_call is not False:
        return None
    return f"! {model_name(entry)} cannot call tools ({found.why}). {NO_TOOLS_FIX}"


def record_tools(record: BackendRecord, home: Home) -> ToolSupport:
    """Whether a running backend's model can call tools: as its launcher found at start (in the state file),
    else from the config its state file names (or the default).

    The launcher's finding comes first: the config may have been edited since, or may not be readable from
    this shell (an environment variable it names that only the launcher's shell had).
    """
    known = record.tools.get("can_call") if isinstance(record.tools, dict) else None
    if isinstance(known, bool):
        return ToolSupport(known, str(record.tools.get("why") or ""))
    found = _from_config(record, home)
    if found.can_call is None and record.kind == "mlx-server" and record.base_url:
        return _from_server(record.base_url) or found
    return found


def _from_server(base_url: str) -> ToolSupport | None:
    """What our MLX server says of its default model (it resolved a Hugging Face id the config only names)."""
    import httpx

    try:
        response = httpx.get(f"{base_url.rstrip('/')}/models", timeout=SERVER_ASK_TIMEOUT, trust_env=False)
        models = response.json().get("data", [])
        model = next((m for m in models if m.get("default")), models[0] if models else None)
        tools = model.get("tools") if isinstance(model, dict) else None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, AttributeError, TypeError):
        return None
    if not isinstance(tools, dict) or not isinstance(tools.get("can_call"), bool):
        return None
    return ToolSupport(tools["can_call"], str(tools.get("why") or ""))


def _from_config(record: BackendRecord, home: Home) -> ToolSupport:
    try:
        if record.config_path:
            entry = parse_config_file(Path(record.config_path), os.environ).backends.get(record.name)
        else:
            from launcher.defaults import default_config

            entry = default_config(home.models).backends.get(record.name)
    except ConfigError:
        return ToolSupport(None, "its config cannot be read now")
    return entry_tools(entry) if entry is not None else ToolSupport(None, "no longer in its config")
