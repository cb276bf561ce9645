"""The adapter protocol: how a backend kind is launched and probed, described as data.

An adapter turns one `backends.<name>` entry into a `LaunchSpec`. It never spawns, sleeps or
retries: the supervisor does all of that, the same way for every kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from adapters.facts import ModelFacts, model_facts, with_folder_facts
from adapters.facts import model_config as model_config  # the kinds import these from here
from adapters.facts import model_context_length as model_context_length
from adapters.findings import Check as Check  # the kinds and doctor import these from here
from adapters.findings import CheckStatus as CheckStatus
from launcher.redact import is_secret_name

if TYPE_CHECKING:
    from launcher.config import BackendConfig, Config


class ApiKind(StrEnum):
    """The HTTP API a backend speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class Probe:
    """One HTTP request whose 2xx answer means "healthy"."""

    url: str
    method: str = "GET"
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything the supervisor needs to start and watch one backend.

    `argv` is empty for kinds that spawn nothing (a remote server, the Anthropic API): the
    supervisor then only probes. `secrets` are values that must never appear in a log.
    """

    name: str
    kind: str
    argv: tuple[str, ...]
    base_url: str
    api: ApiKind
    readiness: Probe | None
    liveness: Probe | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    secrets: tuple[str, ...] = ()
    # What the proxy needs to talk to it well.
    model_name: str | None = None  # the `model` to send; None omits it (a local server knows its model)
    context_length: int | None = field(default=None, compare=False)
    tokenize_url: str | None = None  # counts tokens with the model's own tokenizer (count_tokens, limits)
    tokenizer_folder: str | None = None  # without a tokenize_url: the local folder whose tokenizer counts
    # False: the model cannot see images and the server would drop them, so the proxy refuses them;
    # None: the backend decides (answers with an error of its own, or sees them).
    accepts_images: bool | None = None
    in_process: bool = False  # embedded: served inside the proxy's process, nothing spawned
    # The model's facts, resolved once (adapters/facts.py). Not compared, nor is `context_length`: what the
    # proxy knows of the model is no reason to start the backend again (a kind passing them to its server
    # has them in `argv`).
    facts: ModelFacts = field(default_factory=ModelFacts, compare=False)

    @property
    def spawns(self) -> bool:
        return bool(self.argv) and not self.in_process

    @property
    def health_url(self) -> str | None:
        return self.readiness.url if self.readiness else None


class Adapter(Protocol):
    """A backend kind. `launch` describes the process; `checks` explains what could stop it."""

    kind: str

    def launch(self, name: str, entry: BackendConfig, config: Config) -> LaunchSpec: ...

    def checks(self, name: str, entry: BackendConfig, config: Config) -> list[Check]: ...


class AdapterError(ValueError):
    """A backend entry that cannot be turned into a launch spec (missing model, port, command)."""


# name -> adapter; filled by adapters/__init__.py so this module stays import-light.
REGISTRY: dict[str, Adapter] = {}

# An entry without `type` is read as earlier anyclaude read it: by its name.
_KIND_BY_NAME: tuple[tuple[str, str], ...] = (
    ("mlx-legacy", "script"),
    ("mlx-textgen", "mlx-textgen"),
    ("mlx-lm", "mlx-lm"),
    ("mlx", "mlx-server"),
    ("mistralrs", "mistralrs"),
    ("mistral-rs", "mistralrs"),
    ("llama-cpp", "llama-cpp"),
    ("llamacpp", "llama-cpp"),
    ("lmstudio", "remote"),
    ("openrouter", "remote"),
    ("remote", "remote"),
    ("claude", "anthropic"),
    ("anthropic", "anthropic"),
)


def infer_kind(name: str, entry: BackendConfig) -> str:
    """The adapter kind of an entry: `type` if given, else `serverScript` (legacy), else the name.

    Raises:
        AdapterError: nothing says which kind it is.
    """
    if entry.type:
        return entry.type
    if entry.server_script:
        return "script"
    if entry.command:
        return "command"
    lowered = name.lower()
    for prefix, kind in _KIND_BY_NAME:
        if lowered == prefix or lowered.startswith(prefix + "-") or lowered.startswith(prefix + "_"):
            return kind
    if entry.base_url:
        return "remote"
    raise AdapterError(f"cannot tell which kind of backend '{name}' is; set \"type\" (one of: {known_kinds()})")


def known_kinds() -> str:
    return ", ".join(sorted(REGISTRY))


def adapter_for(name: str, entry: BackendConfig) -> Adapter:
    kind = infer_kind(name, entry)
    try:
        return REGISTRY[kind]
    except KeyError:
        raise AdapterError(f"unknown backend type '{kind}' (one of: {known_kinds()})") from None


def launch_spec(name: str, config: Config) -> LaunchSpec:
    """The launch spec of backend `name` in `config`, its model's facts resolved. Raises AdapterError."""
    entry = with_folder_facts(config.backends[name])
    spec = adapter_for(name, entry).launch(name, entry, config)
    return dataclasses.replace(spec, facts=model_facts(entry))


# ---------------------------------------------------------------------------------------------
# Helpers shared by the kinds

_PLACEHOLDER = re.compile(r"\{(port|host|model)\}")


def fill_placeholders(arg: str, values: Mapping[str, str]) -> str:
    """Replace `{port}`, `{host}`, `{model}` in one argument; other braces are left alone."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], arg)


def local_server_spec(
    name: str,
    kind: str,
    entry: BackendConfig,
    port: int,
    argv: tuple[str, ...] | list[str],
    *,
    health_path: str,
    env: Mapping[str, str] | None = None,
    preload_blas: bool = False,
    readiness: Probe | None = None,
    api: ApiKind = ApiKind.OPENAI,
    **extra: Any,
) -> LaunchSpec:
    """The spec of a server anyclaude starts on `entry.host:port`, as most kinds describe it.

    Probes go to the entry's `healthPath` or the kind's `health_path` (readiness may differ, e.g. a
    1-token completion); the environment is the kind's `env`, then the entry's `env`, then, for MLX
    kinds on Linux, OpenBLAS preloaded (merged with any LD_PRELOAD and LD_LIBRARY_PATH already set). The
    entry's `contextLength` (else the model folder's own) reaches the proxy's prompt-size check for
    every kind, unless the kind passes a `context_length` of its own.
    """
    if "context_length" not in extra:  # a kind that passes its own read the model folder already
        extra["context_length"] = entry.context_length or model_context_length(entry.model)
    if "tokenize_url" not in extra:  # prompts are counted with the served folder's own tokenizer
        extra["tokenizer_folder"] = model_tokenizer_folder(entry.model)
    liveness = Probe(local_url(entry, port, entry.health_path or health_path))
    merged = {**(env or {}), **entry.env}
    if preload_blas:
        from adapters.openblas import openblas_env

        merged |= openblas_env(merged.get("LD_PRELOAD", ""), ld_library_path=merged.get("LD_LIBRARY_PATH", ""))
    extra.setdefault("base_url", entry.base_url or local_url(entry, port, "/v1"))
    return LaunchSpec(
        name=name,
        kind=kind,
        argv=tuple(argv),
        api=api,
        readiness=readiness or liveness,
        liveness=liveness,
        env=merged,
        host=entry.host,
        port=port,
        secrets=entry_secrets(entry),
        **extra,
    )


def url_spec(
    name: str, kind: str, entry: BackendConfig, base_url: str, api: ApiKind, probe: Probe | None, **extra: Any
) -> LaunchSpec:
    """The spec of a server anyclaude only reaches (nothing is spawned): probed at `probe`, if any."""
    parts = urlsplit(base_url)
    return LaunchSpec(
        name=name,
        kind=kind,
        argv=(),
        base_url=base_url,
        api=api,
        readiness=probe,
        liveness=probe,
        host=parts.hostname or entry.host,
        port=parts.port,
        secrets=entry_secrets(entry),
        **extra,
    )


def require_port(name: str, entry: BackendConfig) -> int:
    if entry.port is None:
        raise AdapterError(f"backends.{name}.port is required for a backend anyclaude starts")
    return entry.port


def local_url(entry: BackendConfig, port: int, path: str = "") -> str:
    host = "127.0.0.1" if entry.host in ("0.0.0.0", "localhost") else entry.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{path}"


def entry_secrets(entry: BackendConfig) -> tuple[str, ...]:
    """Values of this entry that must never be logged: its key and secret-looking env values."""
    found = [entry.api_key.get_secret_value()] if entry.api_key else []
    found += [value for key, value in entry.env.items() if is_secret_name(key) and value]
    return tuple(s for s in found if s)


def model_has_vision(model: str | None) -> bool | None:
    """Whether a local model folder's config.json describes a vision tower (`vision_config`); None if unreadable."""
    data = model_config(model)
    return None if data is None else bool(data.get("vision_config"))


def model_tokenizer_folder(model: str | None) -> str | None:
    """A local model folder that holds a tokenizer (not a Hub id, not a GGUF file), else None."""
    from pathlib import Path

    if not model:
        return None
    folder = Path(model).expanduser()
    try:
        found = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    except OSError:
        return None
    return str(folder) if found else None
