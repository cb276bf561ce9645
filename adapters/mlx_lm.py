"""`mlx-lm`: the official `mlx_lm server`, on one machine or across several with `mlx.launch`.

Its `/health` only says the generation thread is alive, which can be well before the model
answers; readiness is therefore a one-token chat completion. That request names no `model`:
naming any other model makes the server try the Hugging Face Hub and drop the loaded one.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.base import (
    AdapterError,
    Check,
    CheckStatus,
    LaunchSpec,
    Probe,
    local_server_spec,
    local_url,
    model_has_vision,
    require_port,
)
from adapters.checks import (
    hf_cache_dir,
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

# Releases that changed what this adapter relies on (read from mlx-lm's history).
ABSOLUTE_PATHS = (0, 28, 0)  # before: local models had to sit under the working directory
DISTRIBUTED_SERVER = (0, 30, 7)  # `--pipeline` and multi-host serving
PROMPT_CACHE_SIZE = (0, 31, 0)  # `--prompt-cache-size`
READINESS_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


def server_argv(python: str, model: str, entry: BackendConfig, port: int) -> list[str]:
    argv = [python, "-m", "mlx_lm", "server", "--model", model, "--host", entry.host, "--port", str(port)]
    if entry.chat_template_args:
        argv += ["--chat-template-args", json.dumps(entry.chat_template_args, separators=(",", ":"))]
    if entry.prompt_cache_size is not None:
        argv += ["--prompt-cache-size", str(entry.prompt_cache_size)]
    if entry.log_level:
        argv += ["--log-level", entry.log_level.upper()]
    return argv


def distributed_argv(name: str, python: str, server: list[str], spec: dict[str, str | bool | list[str]]) -> list[str]:
    """`mlx.launch ... -- <server argv> [--pipeline]`; every host must have the same Python path.

    Raises:
        AdapterError: unknown keys, no hosts, or host names where the ring backend needs IPs.
    """
    field = f"backends.{name}.distributed"
    unknown = set(spec) - {"hosts", "hostfile", "backend", "pipeline"}
    if unknown:
        raise AdapterError(f"{field}: unknown key {sorted(unknown)[0]!r} (hosts, hostfile, backend, pipeline)")
    hosts, hostfile, backend = spec.get("hosts", []), spec.get("hostfile"), spec.get("backend", "ring")
    if not isinstance(hosts, list) or not isinstance(backend, str) or not isinstance(hostfile, str | None):
        raise AdapterError(f"{field}: hosts is a list of addresses, backend and hostfile are strings")
    if bool(hosts) == bool(hostfile):
        raise AdapterError(f"{field}: give either hosts or hostfile")
    if backend == "ring" and not all(map(_is_ip, hosts)):
        raise AdapterError(f"{field}.hosts: the ring backend needs IP addresses; use IPs or a hostfile")
    launcher = Path(python).parent / "mlx.launch"
    argv = [str(launcher) if launcher.exists() else "mlx.launch"]
    argv += ["--hostfile", hostfile] if hostfile else ["--hosts", ",".join(hosts)]
    argv += ["--backend", backend, "--", *server]
    # Pipeline parallelism passes only activations between machines, which an ordinary network keeps
    # up with; tensor parallelism (`"pipeline": false`) talks every layer and wants a fast link.
    return [*argv, "--pipeline"] if spec.get("pipeline", True) is not False else argv


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def hf_env(entry: BackendConfig) -> dict[str, str]:
    """Keep the server off the Hub. Its `/v1/models` scans the HF cache and answers an empty body when
    that folder is missing, so HF_HUB_CACHE names the usual folder unless the entry's `env` names another;
    the adapter never creates it (doctor says when it is missing)."""
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": entry.env.get("HF_HUB_CACHE") or str(hf_cache_dir())}


class MlxLmAdapter:
    kind = "mlx-lm"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        if not entry.model:
            raise AdapterError(f'backends.{name}.model is required for type "mlx-lm" (a model folder)')
        port = require_port(name, entry)
        python = venv_python(entry.python_venv)
        argv = server_argv(python, entry.model, entry, port)
        if entry.distributed:
            argv = distributed_argv(name, python, argv, entry.distributed)
        completion = Probe(local_url(entry, port, "/v1/chat/completions"), method="POST", json=READINESS_BODY)
        return local_server_spec(
            name,
            self.kind,
            entry,
            port,
            (*argv, *entry.args),
            health_path="/health",
            env=hf_env(entry),
            preload_blas=True,
            readiness=completion,
            # mlx_lm.server drops the images of a request to a text-only model without a word.
            accepts_images=model_has_vision(entry.model),
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        # The Python running doctor is looked at; a pythonVenv of its own is the person's to keep in step.
        found = [package_check("mlx-lm", "pip install -U mlx-lm (Linux also needs mlx[cpu])")]
        found += version_checks(installed_version("mlx-lm"), entry)
        found += [model_path_check(self.kind, entry.model), model_memory_check(entry.model, name="mlx-lm.memory")]
        found.append(port_check(entry.host, entry.port, name="mlx-lm.port"))
        cache = Path(hf_env(entry)["HF_HUB_CACHE"])
        if not cache.is_dir():
            missing = f"{cache} does not exist, so /v1/models answers an empty body"
            found.append(Check("mlx-lm.hf-cache", CheckStatus.WARN, missing, f"mkdir -p {cache}"))
        blas = openblas_check(self.kind)
        return found + ([blas] if blas else [])


def version_checks(version: str | None, entry: BackendConfig) -> list[Check]:
    """What the installed mlx-lm cannot do of what this entry asks."""
    if version is None:
        return []
    have = version_tuple(version)
    needs = [(ABSOLUTE_PATHS, "accepts absolute model paths")]
    if entry.distributed:
        needs.append((DISTRIBUTED_SERVER, "serves across machines (--pipeline)"))
    if entry.prompt_cache_size is not None:
        needs.append((PROMPT_CACHE_SIZE, "takes --prompt-cache-size"))
    missing = [(need, what) for need, what in needs if have < need]
    if not missing:
        return [Check("mlx-lm.version", CheckStatus.OK, f"mlx-lm {version} does what this backend asks")]
    need, what = max(missing)
    wanted = ".".join(map(str, need))
    finding = f"mlx-lm {version} is too old: {wanted} is the first release that {what}"
    return [Check("mlx-lm.version", CheckStatus.FAIL, finding, f"pip install -U 'mlx-lm>={wanted}'")]
