"""`mlx-server`: the launcher's description of our own MLX server (`python -m adapters.mlx_server`).

The only module of this package that knows about the launcher's config; the server itself takes a
`ServerConfig`, built here for an embedded backend (`embedded: true`), or from the command line that
`launch` writes for a child process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import (
    AdapterError,
    ApiKind,
    Check,
    CheckStatus,
    LaunchSpec,
    Probe,
    local_server_spec,
    local_url,
    model_context_length,
    require_port,
)
from adapters.checks import model_memory_check, model_path_check, package_check, port_check
from adapters.mlx_server.config import DEFAULT_SPECULATIVE, ModelSpec, ServerConfig
from adapters.openblas import openblas_check

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config

HEALTH_PATH = "/health"
# An embedded server has no address; the proxy reaches it through an in-process transport.
EMBEDDED_BASE = "http://embedded.anyclaude"
_GB = 1024**3


def _require_model(name: str, entry: BackendConfig) -> str:
    if not entry.model:
        raise AdapterError(f'backends.{name}.model is required for type "mlx-server" (a model folder)')
    return entry.model


def server_argv(name: str, entry: BackendConfig, port: int) -> list[str]:
    """The child's command line; every mlx-server config key maps to one flag."""
    argv = [sys.executable, "-m", "adapters.mlx_server", "--model", _require_model(name, entry)]
    argv += ["--port", str(port), "--host", entry.host]
    if entry.model_alias:
        argv += ["--alias", entry.model_alias]
    for alias, path in entry.models.items():
        argv += ["--extra-model", f"{alias}={path}"]
    if entry.context_length is not None:
        argv += ["--context-length", str(entry.context_length)]
    argv += ["--max-queue", str(entry.max_queue)]
    if entry.decode_concurrency is not None:
        argv += ["--decode-concurrency", str(entry.decode_concurrency)]
    if entry.prefill_concurrency is not None:
        argv += ["--prefill-concurrency", str(entry.prefill_concurrency)]
    if entry.memory_limit is not None:
        argv += ["--memory-limit", str(entry.memory_limit)]
    if entry.tool_parser:
        argv += ["--tool-parser", entry.tool_parser]
    if entry.speculative is not None:
        argv += ["--speculative", entry.speculative]
    if entry.temperature is not None:
        argv += ["--temperature", str(entry.temperature)]
    if entry.top_p is not None:
        argv += ["--top-p", str(entry.top_p)]
    if entry.cpu_only:
        argv.append("--cpu-only")
    if entry.log_level:
        argv += ["--log-level", entry.log_level.lower()]
    argv += _cache_flags(entry)
    return [*argv, *entry.args]


def _cache_flags(entry: BackendConfig) -> list[str]:
    """Prompt-cache flags for keys that are set; the server's defaults apply to the rest."""
    flags: list[str] = []
    for flag, value in (
        ("--cache-slots", entry.cache_slots),
        ("--cache-bytes", entry.cache_bytes),
        ("--cache-disk-bytes", entry.cache_disk_bytes),
        ("--cache-dir", entry.cache_dir),
        ("--cache-persist-interval", entry.cache_persist_interval),
        ("--warmup-file", entry.warmup_file),
        ("--warmup-tools", entry.warmup_tools),
    ):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def server_config(name: str, entry: BackendConfig, port: int | None = None) -> ServerConfig:
    """The settings of an embedded server (mounted in the proxy's process) for this entry."""
    from adapters.mlx_server.__main__ import default_alias

    model = _require_model(name, entry)
    models = [ModelSpec(entry.model_alias or default_alias(model), model)]
    models += [ModelSpec(alias, path) for alias, path in entry.models.items()]
    return ServerConfig(
        models=tuple(models),
        host=entry.host,
        port=port or entry.port or 0,
        context_length=entry.context_length,
        max_queue=entry.max_queue,
        **_concurrency(entry),
        memory_limit_bytes=int(entry.memory_limit * _GB) if entry.memory_limit else None,
        tool_parser=entry.tool_parser,
        speculative=entry.speculative or DEFAULT_SPECULATIVE,
        temperature=1.0 if entry.temperature is None else entry.temperature,
        top_p=1.0 if entry.top_p is None else entry.top_p,
        cpu_only=entry.cpu_only,
        log_level=(entry.log_level or "info").lower(),
        **_cache_settings(entry),
    )


def _concurrency(entry: BackendConfig) -> dict[str, Any]:
    """Batch limits of an embedded server: the keys that are set; the server's defaults apply to the rest."""
    settings = {"decode_concurrency": entry.decode_concurrency, "prefill_concurrency": entry.prefill_concurrency}
    return {name: value for name, value in settings.items() if value is not None}


def _cache_settings(entry: BackendConfig) -> dict[str, Any]:
    """Prompt-cache fields of an embedded server; it saves caches only when `cacheDir` is set."""
    settings: dict[str, Any] = {"cache_dir": Path(entry.cache_dir).expanduser() if entry.cache_dir else None}
    for name in ("cache_slots", "cache_bytes", "cache_disk_bytes", "cache_persist_interval"):
        if (value := getattr(entry, name)) is not None:
            settings[name] = value
    for name in ("warmup_file", "warmup_tools"):
        if (value := getattr(entry, name)) is not None:
            settings[name] = Path(value).expanduser()
    return settings


class MlxServerAdapter:
    kind = "mlx-server"

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec:
        context = entry.context_length or model_context_length(entry.model)
        if entry.embedded:
            _require_model(name, entry)
            return LaunchSpec(
                name=name,
                kind=self.kind,
                argv=(),
                base_url=EMBEDDED_BASE + "/v1",
                api=ApiKind.OPENAI,
                readiness=Probe(EMBEDDED_BASE + HEALTH_PATH),
                liveness=Probe(EMBEDDED_BASE + HEALTH_PATH),
                context_length=context,
                tokenize_url=EMBEDDED_BASE + "/v1/tokenize",
                in_process=True,
            )
        port = require_port(name, entry)
        return local_server_spec(
            name,
            self.kind,
            entry,
            port,
            server_argv(name, entry, port),
            health_path=HEALTH_PATH,
            preload_blas=True,
            context_length=context,
            tokenize_url=local_url(entry, port, "/v1/tokenize"),
        )

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]:
        found = [package_check("mlx-lm", "pip install -e . (Linux also needs mlx[cpu])")]
        found += [model_path_check(self.kind, entry.model), model_memory_check(entry.model, name="mlx-server.memory")]
        if not entry.embedded:
            found.append(port_check(entry.host, entry.port, name="mlx-server.port"))
        if entry.tool_parser:
            found.append(tool_parser_check(entry.tool_parser))
        found.append(cache_budget_check(entry))
        blas = openblas_check(self.kind)
        return found + ([blas] if blas else [])


def cache_budget_check(entry: BackendConfig) -> Check:
    """The prompt cache's RAM and disk budgets as the server will choose them (`cache_budget.py`)."""
    from adapters.mlx_server.__main__ import default_cache_dir
    from adapters.mlx_server.cache_budget import disk_budget, machine_memory, ram_budget, weights_bytes

    if entry.cache_slots == 0:
        return Check("mlx-server.cache-budget", CheckStatus.OK, "prompt cache off (cacheSlots 0)")
    local = Path(entry.model).expanduser() if entry.model else None
    ram = ram_budget(entry.cache_bytes, machine=machine_memory(), weights=weights_bytes(local))
    if entry.cache_dir == "" or (entry.embedded and not entry.cache_dir):
        return Check("mlx-server.cache-budget", CheckStatus.OK, f"prompt cache: {ram.describe()}; no disk tier")
    folder = Path(entry.cache_dir).expanduser() if entry.cache_dir else default_cache_dir()
    disk = disk_budget(entry.cache_disk_bytes, folder)
    return Check("mlx-server.cache-budget", CheckStatus.OK, f"prompt cache: {ram.describe()}; {disk.describe()}")


def tool_parser_check(name: str) -> Check:
    """A forced `toolParser` must name a format mlx-lm or we know (an embedded server has no start check)."""
    from adapters.mlx_server.mlx_tools import known_tool_parsers

    known = sorted(known_tool_parsers())
    if name in known:
        return Check("mlx-server.tool-parser", CheckStatus.OK, f"tool-call format {name!r}")
    return Check(
        "mlx-server.tool-parser",
        CheckStatus.FAIL,
        f"unknown tool-call format {name!r}",
        f"set toolParser to one of: {', '.join(known)}, or remove it to use the model's own",
    )
