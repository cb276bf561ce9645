"""`anyclaude init`: a starter `.anyclauderc.json` from the example that ships with anyclaude."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launcher.config import CONFIG_NAME
from launcher.errors import AnyclaudeError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".anyclauderc.example.json"


def starter_text() -> str:
    """The example config with script paths made absolute, so the file works from any folder."""
    data: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8")) if EXAMPLE.is_file() else {}
    if not data:
        data = {"backend": "mlx", "backends": {"mlx": {"type": "mlx-server", "port": 8081, "model": "~/models/MODEL"}}}
    for entry in data.get("backends", {}).values():
        script = entry.get("serverScript") if isinstance(entry, dict) else None
        if isinstance(script, str) and script.startswith("scripts/") and (ROOT / script).is_file():
            entry["serverScript"] = str(ROOT / script)
    return json.dumps(data, indent=2) + "\n"


def write_starter(folder: Path, force: bool = False) -> Path:
    path = folder / CONFIG_NAME
    if path.exists() and not force:
        raise AnyclaudeError(f"{path} exists already.", hint="Edit it, or run `anyclaude init --force` to replace it.")
    path.write_text(starter_text(), encoding="utf-8")
    return path
