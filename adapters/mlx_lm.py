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
        sharding = distributed_check(name, entry)
        if sharding is not None:
            found.append(sharding)
        cache = Path(hf_env(entry)["HF_HUB_CACHE"])
        if not cache.is_dir():
            missing = f"{cache} does not exist, so /v1/models answers an empty body"
            found.append(Check("mlx-lm.hf-cache", CheckStatus.WARN, missing, f"mkdir -p {cache}"))
        blas = openblas_check(self.kind)
        return found + ([blas] if blas else [])


def sharding_support(model: str) -> tuple[str, bool, bool] | None:
    """(model type, can pipeline, can tensor-parallel) as mlx-lm's `sharded_load` decides them, from a lazily
    built model (no weights read); None when mlx-lm cannot be imported here or cannot build the model."""
    folder = Path(model).expanduser()
    try:
        model_type = str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", "?"))
        from mlx_lm.utils import load_model

        built, _ = load_model(folder, lazy=True, strict=False)
    except Exception:  # a check must never crash doctor or a start: "cannot tell" is its answer
        return None
    return model_type, hasattr(built, "model") and hasattr(built.model, "pipeline"), hasattr(built, "shard")


def distributed_check(name: str, entry: BackendConfig) -> Check | None:
    """Whether mlx-lm can shard this model the way `distributed.pipeline` asks (every rank dies at load if not)."""
    if not entry.distributed or not entry.model or not Path(entry.model).expanduser().is_dir():
        return None
    pipeline = entry.distributed.get("pipeline", True) is not False
    field = f"backends.{name}.distributed.pipeline"
    support = sharding_support(entry.model)
    if support is None:
        finding = "cannot tell which distributed mode the model supports (mlx-lm cannot build it here)"
        fix = "Run doctor with the Python that runs the server."
        return Check("mlx-lm.distributed", CheckStatus.WARN, finding, fix)
    model_type, can_pipeline, can_tensor = support
    if pipeline and not can_pipeline:
        other = f"set {field} to false: it supports tensor parallelism" if can_tensor else "run it on one machine"
        finding = f"mlx-lm cannot pipeline {model_type} models (every rank would stop at load)"
        return Check("mlx-lm.distributed", CheckStatus.FAIL, finding, f"Use the mode it supports: {other}.", key=field)
    if not pipeline and not can_tensor:
        other = f"set {field} to true: it supports pipelining" if can_pipeline else "run it on one machine"
        finding = f"mlx-lm cannot split {model_type} models by tensor parallelism (every rank would stop at load)"
        return Check("mlx-lm.distributed", CheckStatus.FAIL, finding, f"Use the mode it supports: {other}.", key=field)
    index = Path(entry.model).expanduser() / "model.safetensors.index.json"
    if pipeline and not index.is_file():
        finding = f"pipelining reads each rank's layers from {index.name}, which {entry.model} lacks"
        fix = f"Save the model in shards (mlx_lm.convert writes the index), or set {field} to false."
        return Check("mlx-lm.distributed", CheckStatus.FAIL, finding, fix, key=field)
    mode = "pipelining" if pipeline else "tensor parallelism"
    return Check("mlx-lm.distributed", CheckStatus.OK, f"mlx-lm can run {model_type} models by {mode}")


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
