"""`mlx-textgen`: MLX-Textgen's server (0.2.x), through `scripts/mlx-textgen-server.sh`.

The wrapper makes it run on Linux too (see the script). Two of its habits shape this adapter:
it has no `/health` (404), so both probes read `/v1/models`; and it loads the model on the first
request, so "ready" means "listening" and the first answer is slow. On Linux its non-streaming
replies fail ("There is no Stream(cpu, 0) in current thread") while streaming works: the bridge
always streams from the backend, which is what keeps this kind usable there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    Check,
    CheckStatus,
    LaunchSpec,
    local_server_spec,
    require_port,
)
from adapters.checks import (
    installed_version,
    interpreter_check,
    model_memory_check,
    model_path_check,
    port_check,
    script_check,
    version_tuple,
)
from adapters.openblas import openblas_check
from adapters.script import bundled_script, venv_python

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

WRAPPER = bundled_script("mlx-textgen-server.sh")
DEFAULT_HEALTH_PATH = "/v1/models"
CLI_SINCE = (0, 2)  # `mlx_textgen serve -m PATH -p PORT --host HOST`, which the wrapper speaks


# The one way to install it, on Linux and macOS alike: its own venv (it pins plain `mlx` and pulls a large tree),
# with MLX's CPU build on Linux, where plain `mlx` has no backend ("libmlx.so: cannot open shared object file").
VENV = "~/.venvs/mlx-textgen"
RECIPE = (
    f"python3 -m venv {VENV} && {VENV}/bin/pip install mlx-textgen \"mlx[cpu]; sys_platform == 'linux'\", "
    f'then set "pythonVenv": "{VENV}" on this backend'
)
_VERSIONS_TIMEOUT_S = 5.0


def venv_versions(python: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each distribution as `python` sees it (None: not installed or not runnable)."""
    if Path(python).absolute() == Path(sys.executable).absolute():  # not resolved: a venv links the same binary
        return {name: installed_version(name) for name in names}
    script = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    try:
        done = subprocess.run(
            [python, "-c", script, *names], capture_output=True, text=True, timeout=_VERSIONS_TIMEOUT_S, check=False
        )
        found = json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, subprocess.SubprocessError, ValueError):
        found = {}
    return {name: found.get(name) for name in names}


class MlxTextgenAdapter:
    kind = "mlx-textgen"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        if not entry.model:
            raise AdapterError(f'backends.{name}.model is required for type "mlx-textgen" (a model folder)')
        port = require_port(name, entry)
        # Requests must name the model; naming it ourselves keeps that name known to the proxy.
        served = entry.model_alias or Path(entry.model).name or "model"
        argv: tuple[str, ...] = ("bash", str(WRAPPER), "-m", entry.model, "--model-name", served)
        argv = (*argv, "-p", str(port), "--host", entry.host, *entry.args)
        return local_server_spec(
            name,
            self.kind,
            entry,
            port,
            argv,
            health_path=DEFAULT_HEALTH_PATH,
            env={"ANYCLAUDE_PYTHON": venv_python(entry.python_venv)},
            preload_blas=True,
            model_name=served,
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        python = venv_python(entry.python_venv)
        found = [script_check("mlx-textgen.wrapper", WRAPPER, "wrapper", "Reinstall anyclaude (its package lacks it).")]
        interpreter = interpreter_check("mlx-textgen.python", entry.python_venv, python)
        if interpreter is not None:
            found.append(interpreter)
        if interpreter is None or interpreter.status is CheckStatus.OK:
            found += _package_checks(python)
        found += [model_path_check(self.kind, entry.model), model_memory_check(entry.model, name="mlx-textgen.memory")]
        found.append(port_check(entry.host, entry.port, name="mlx-textgen.port"))
        blas = openblas_check(self.kind)
        return found + ([blas] if blas else [])


def _package_checks(python: str, platform: str = sys.platform) -> list[Check]:
    """MLX-Textgen (0.2 or newer) in the Python that runs it, and on Linux MLX's CPU build beside it."""
    linux = platform.startswith("linux")
    versions = venv_versions(python, ("mlx-textgen", "mlx-cpu") if linux else ("mlx-textgen",))
    version = versions["mlx-textgen"]
    if version is None:
        return [Check("mlx-textgen.package", CheckStatus.FAIL, f"mlx-textgen is not installed for {python}", RECIPE)]
    if version_tuple(version) < CLI_SINCE:
        too_old = f"mlx-textgen {version} predates the `serve` command the wrapper runs"
        return [Check("mlx-textgen.package", CheckStatus.FAIL, too_old, RECIPE)]
    found = [Check("mlx-textgen.package", CheckStatus.OK, f"mlx-textgen {version} ({python})")]
    if linux and versions["mlx-cpu"] is None:
        missing = f"MLX's CPU build (mlx[cpu]) is not installed for {python}: plain mlx has no backend on Linux"
        found.append(Check("mlx-textgen.mlx-cpu", CheckStatus.FAIL, missing, RECIPE))
    return found
