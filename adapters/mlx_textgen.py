"""`mlx-textgen`: MLX-Textgen's server (0.2.x), through `scripts/mlx-textgen-server.sh`.

The wrapper makes it run on Linux too (see the script). Two of its habits shape this adapter:
it has no `/health` (404), so both probes read `/v1/models`; and it loads the model on the first
request, so "ready" means "listening" and the first answer is slow. On Linux its non-streaming
replies fail ("There is no Stream(cpu, 0) in current thread") while streaming works: the bridge
always streams from the backend, which is what keeps this kind usable there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    Check,
    CheckStatus,
    LaunchSpec,
    local_server_spec,
    model_context_length,
    require_port,
)
from adapters.checks import (
    installed_version,
    model_memory_check,
    model_path_check,
    package_check,
    port_check,
    version_tuple,
)
from adapters.openblas import openblas_check
from adapters.script import venv_python

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

WRAPPER = Path(__file__).resolve().parent.parent / "scripts" / "mlx-textgen-server.sh"
DEFAULT_HEALTH_PATH = "/v1/models"
CLI_SINCE = (0, 2)  # `mlx_textgen serve -m PATH -p PORT --host HOST`, which the wrapper speaks


def install_hint(platform: str = sys.platform) -> str:
    hint = "pip install 'anyclaude[textgen]'"
    # MLX-Textgen depends on plain `mlx`, which has no backend on Linux.
    return hint + " and pip install 'mlx[cpu]' (Linux needs the CPU build)" if platform.startswith("linux") else hint


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
            context_length=entry.context_length or model_context_length(entry.model),
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        found = [package_check("mlx-textgen", install_hint())]
        version = installed_version("mlx-textgen")
        if version and version_tuple(version) < CLI_SINCE:
            too_old = f"mlx-textgen {version} predates the `serve` command the wrapper runs"
            found.append(Check("mlx-textgen.version", CheckStatus.FAIL, too_old, install_hint()))
        if sys.platform.startswith("linux"):
            found.append(package_check("mlx-cpu", "pip install 'mlx[cpu]' (plain mlx has no backend on Linux)"))
        found += [model_path_check(self.kind, entry.model), model_memory_check(entry.model, name="mlx-textgen.memory")]
        found.append(port_check(entry.host, entry.port, name="mlx-textgen.port"))
        blas = openblas_check(self.kind)
        return found + ([blas] if blas else [])
