"""`script` (legacy mode): run a `serverScript` the way earlier anyclaude did.

A `.py` script runs with the Python of `pythonVenv` (or the one running anyclaude), a `.sh`
script with bash, anything else directly. Each is given `--model`, `--port` and `--host`, and
the same as environment variables (`MODEL`, `MODEL_PATH`, `PORT`, `HOST`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    Check,
    LaunchSpec,
    local_server_spec,
    require_port,
)
from adapters.checks import interpreter_check, script_check

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

DEFAULT_HEALTH_PATH = "/health"
# The scripts/ an installed anyclaude needs, shipped inside the package (links to the top-level scripts/ in a
# checkout; the files themselves in a wheel), so they exist however anyclaude was installed.
BUNDLED = Path(__file__).resolve().parent / "bundled"


def bundled_script(name: str) -> Path:
    """The path of one of anyclaude's own scripts (`mlx-server.py`, `mlx-textgen-server.sh`)."""
    return BUNDLED / name


def venv_python(venv: str | None) -> str:
    """The interpreter of a virtual environment, or the one running anyclaude."""
    if not venv:
        return sys.executable
    root = Path(venv).expanduser()
    for candidate in (root / "bin" / "python", root / "bin" / "python3", root / "Scripts" / "python.exe"):
        if candidate.exists():
            return str(candidate)
    return str(root / "bin" / "python")


def interpreter_for(script: str, venv: str | None) -> list[str]:
    suffix = Path(script).suffix.lower()
    if suffix == ".py":
        return [venv_python(venv), script]
    if suffix == ".sh":
        return ["bash", script]
    return [script]


class ScriptAdapter:
    kind = "script"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        if not entry.server_script:
            raise AdapterError(f'backends.{name}.serverScript is required for type "script"')
        port = require_port(name, entry)
        argv = [*interpreter_for(entry.server_script, entry.python_venv), "--port", str(port), "--host", entry.host]
        env = {"PORT": str(port), "HOST": entry.host}
        if entry.model:
            argv += ["--model", entry.model]
            env |= {"MODEL": entry.model, "MODEL_PATH": entry.model}
        # A Python server script is usually an MLX one (ours, in legacy mode): give it the fast BLAS too.
        python = Path(entry.server_script).suffix.lower() == ".py"
        argv += entry.args
        return local_server_spec(
            name, self.kind, entry, port, argv, health_path=DEFAULT_HEALTH_PATH, env=env, preload_blas=python
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        if not entry.server_script:
            return []
        fix = "Fix the backend's serverScript."
        found = [script_check("script.server-script", entry.server_script, "serverScript", fix)]
        if Path(entry.server_script).suffix.lower() == ".py":
            python = interpreter_check("script.python", entry.python_venv, venv_python(entry.python_venv))
            found += [python] if python else []
        return found
