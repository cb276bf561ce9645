"""`anyclaude init`: a starter `.anyclauderc.json` from the example that ships with anyclaude.

The example and the scripts it names travel inside the package (`launcher/bundled/`, `adapters/bundled/`), so
`init` writes the whole example, every backend kind included, however anyclaude was installed (a checkout, a
wheel, pipx).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.script import bundled_script
from launcher.config import CONFIG_NAME
from launcher.errors import AnyclaudeError

EXAMPLE = Path(__file__).resolve().parent / "bundled" / "anyclauderc.example.json"
_SCRIPTS = "scripts/"


def starter_text() -> str:
    """The example config with anyclaude's own script paths made absolute, so the file works from any folder.

    Raises:
        AnyclaudeError: the example is missing from the package (a broken install).
    """
    try:
        data: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnyclaudeError(
            f"The example config that ships with anyclaude cannot be read ({EXAMPLE}: {exc}).",
            hint="Reinstall anyclaude (pip install --force-reinstall anyclaude).",
        ) from None
    for entry in data.get("backends", {}).values():
        script = entry.get("serverScript") if isinstance(entry, dict) else None
        if isinstance(script, str) and script.startswith(_SCRIPTS):
            bundled = bundled_script(script.removeprefix(_SCRIPTS))
            if bundled.is_file():
                entry["serverScript"] = str(bundled)
    return json.dumps(data, indent=2) + "\n"


def write_starter(folder: Path, force: bool = False) -> Path:
    """Write the starter config into `folder`; refuse to overwrite one unless `force`."""
    path = folder / CONFIG_NAME
    if path.exists() and not force:
        raise AnyclaudeError(f"{path} exists already.", hint="Edit it, or run `anyclaude init --force` to replace it.")
    text = starter_text()
    path.write_text(text, encoding="utf-8")
    return path
