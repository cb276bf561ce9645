"""`.anyclauderc.json`: discovery, validation and the frozen `Config` that flows down from here.

The file shape is the one earlier anyclaude versions wrote: camelCase keys (snake_case accepted),
keys beginning with `//` are comments, `${VAR}` and `${VAR:-default}` are expanded in strings.
Every error names the file, the JSON path, what was wrong and what to do.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from launcher.config_schema import config_error, did_you_mean
from launcher.errors import ConfigError, ConfigNotFoundError
from launcher.paths import Home

CONFIG_NAME = ".anyclauderc.json"
# Earlier anyclaude served Claude Code on this port; keeping it lets old shell setups keep working.
DEFAULT_PROXY_PORT = 49152
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_REQUEST_LOG_DAYS = 30.0
DEFAULT_REQUEST_LOG_BYTES = 64 * 1024 * 1024


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise PydanticCustomError("port", "{value} is not a valid port (1-65535)", {"value": value})
    return value


def _check_millis(value: int) -> int:
    if value < 0:
        raise PydanticCustomError("millis", "{value} is negative; give a duration in milliseconds", {"value": value})
    return value


Port = Annotated[int, AfterValidator(_check_port)]
Millis = Annotated[int, AfterValidator(_check_millis)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, hide_input_in_errors=True
    )


class ClaudeStart(_Model):
    """How anyclaude starts Claude Code on this backend's model (launcher/claude_fit.py)."""

    tools: str | list[str] = Field(
        "auto",
        description='Tools Claude Code offers: "auto" (none for a model that cannot call tools, Read,Edit,Bash for a '
        'small model, all otherwise), "all", a list such as "Read,Edit,Bash", or "" for none.',
    )
    system_prompt: str = Field(
        "auto",
        description='"auto" (compact for a small model), "default" (Claude Code\'s own), "compact" (anyclaude\'s short '
        "one: the tools' rules and the working folder), or the path of a file holding the prompt.",
    )
    small_model: bool | None = Field(
        None,
        description="Treat the model as small (null: decided from it, under 4B parameters or a window under 32k). "
        'A small model gets the lean choices of "auto" above, and the proxy shapes its prompt: each tool\'s '
        "description cut to its first sentence, and a line after each tool result saying to answer once it can.",
    )
    exclude_dynamic_sections: bool = Field(
        True,
        description="With Claude Code's own system prompt, move the per-folder sections (working directory, git "
        "status) into the first message, so one cached prompt serves every folder.",
    )


class BackendConfig(_Model):
    """One entry of `backends`: how to start (or reach) one model server."""

    type: str | None = Field(None, description="Adapter kind; inferred from the name or serverScript when absent.")
    enabled: bool = Field(
        True,
        description="false: an alternative kept ready; it runs only when chosen (--mode, $ANYCLAUDE_MODE, backend), "
        "and says so. Doctor and config validate skip it until then.",
    )
    description: str | None = Field(None, description="Free text shown by `status` and `doctor`.")
    host: str = Field("127.0.0.1", description="Address the backend binds; loopback unless you know why not.")
    port: Port | None = Field(None, description="Port the backend listens on (required for kinds that start one).")
    model: str | None = Field(
        None,
        validation_alias=AliasChoices("model", "modelPath", "model_path"),
        serialization_alias="model",
        description="Model path (local folder or file) or the model name a remote server knows.",
    )
    base_url: str | None = Field(None, description="OpenAI-style base URL incl. /v1 (remote kinds), or an override.")
    api_key: SecretStr | None = Field(
        None, description="Key sent to the backend; write ${ENV_VAR} to keep it out of the file."
    )
    server_script: str | None = Field(
        None, description="Legacy mode: a .py or .sh server script (relative to this file)."
    )
    python_venv: str | None = Field(None, description="Virtual environment whose Python runs a .py serverScript.")
    command: list[str] | None = Field(None, description="argv for the `command` kind; {port} {host} {model}.")
    args: list[str] = Field(default_factory=list, description="Extra arguments appended to the command line.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the backend.")
    auto_start_server: bool = Field(True, description="false: the server is started by you; anyclaude only probes it.")
    # Loading a large model from a cold disk can take minutes; two minutes covers most local models.
    startup_timeout: Millis = Field(120_000, description="ms to wait for readiness (requests wait as long).")
    stop_timeout: Millis = Field(10_000, description="ms between SIGTERM and SIGKILL when stopping.")
    health_path: str | None = Field(None, description="Path probed for readiness and liveness (kind default).")
    health_interval: Millis = Field(5_000, description="ms between liveness probes.")
    health_timeout: Millis = Field(5_000, description="ms a liveness probe may take.")
    health_failures: int = Field(3, ge=1, description="Consecutive failed liveness probes before a restart.")
    # docs/reliability.md: restarts wait about 1, 2, 4, 8, 16 s, then the supervisor gives up (FATAL).
    restart_delay: Millis = Field(1_000, description="ms before the first restart; doubles each time.")
    restart_delay_max: Millis = Field(30_000, description="ms cap on the restart delay.")
    max_restarts: int = Field(5, ge=0, description="Failed starts in a row before FATAL.")
    stable_after: Millis = Field(30_000, description="Uptime after which the restart backoff resets.")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failed calls that open the circuit breaker.")
    breaker_reset_timeout: Millis = Field(30_000, description="ms the breaker stays open before one probe.")
    context_length: int | None = Field(
        None, ge=1, description='The model\'s context window in tokens; longer prompts get "prompt is too long".'
    )
    max_output_tokens: int | None = Field(None, ge=1, description="Cap on max_tokens sent to this backend.")
    claude: ClaudeStart = Field(
        ClaudeStart.model_validate({}),
        description="How Claude Code is started on this model: {tools, systemPrompt, excludeDynamicSections}.",
    )

    # --- keys of the backend kinds (adapters/*.py) ---
    binary: str | None = Field(None, description="Server executable, a name on PATH or a path (mistralrs, llama-cpp).")
    threads: int | None = Field(None, ge=1, description="llama-cpp: CPU threads (-t); 1 is steadiest on a busy box.")
    chat_template_args: dict[str, Any] | None = Field(
        None, description='mlx-lm: arguments for the chat template, e.g. {"enable_thinking": false}.'
    )
    prompt_cache_size: int | None = Field(None, ge=1, description="mlx-lm: KV caches its prompt cache keeps (10).")
    log_level: str | None = Field(
        None, pattern="(?i)^(debug|info|warning|error|critical)$", description="mlx-lm: its log level (INFO)."
    )
    distributed: dict[str, str | bool | list[str]] | None = Field(
        None,
        description='mlx-lm over several machines through mlx.launch: {"hosts": [IPs], "backend": "ring", '
        '"hostfile": FILE, "pipeline": true}; the first host serves HTTP.',
    )

    # --- keys of our MLX server (adapters/mlx_server) ---
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="mlx-server: sampling temperature for requests that set none (1.0)."
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="mlx-server: top_p for requests that set none.")
    embedded: bool = Field(False, description="mlx-server: serve inside the proxy's process, not as a child process.")
    models: dict[str, str] = Field(
        default_factory=dict, description="mlx-server: more models, alias -> path, each loaded on first use."
    )
    model_alias: str | None = Field(None, description="mlx-server: the name clients use for `model` (its folder name).")
    max_queue: int = Field(8, ge=0, description="mlx-server: requests waiting beyond those running; more get 503.")
    decode_concurrency: int | None = Field(
        None, ge=1, description="mlx-server: requests generating together in one batch (32); 1 runs one at a time."
    )
    prefill_concurrency: int | None = Field(
        None, ge=1, description="mlx-server: requests reading their prompts together (8)."
    )
    memory_limit: float | None = Field(
        None, gt=0, description="mlx-server: GB of model weights kept loaded; least recently used models go first."
    )
    tool_parser: str | None = Field(
        None,
        description="mlx-server: force a tool-call format by name: any the installed mlx-lm ships (json_tools, "
        "qwen3_coder, glm47, kimi_k2, minimax_m2, mistral, pythonic, gemma4, ...; mlx-lm parses these) or hermes, "
        "harmony, llama3_json. Default: the format mlx-lm infers from the chat template, else one we detect from it "
        "or the model type. A server run as a child process refuses an unknown name at start and lists the known "
        "ones.",
    )
    speculative: Literal["ngram", "off"] | None = Field(
        None,
        description='mlx-server: speculative decoding for a request decoding alone: "ngram" drafts the next tokens '
        'from its prompt and reply so far and verifies them in one pass (same output); "off" (the default).',
    )
    cpu_only: bool = Field(False, description="mlx-server: run on the CPU even where a GPU is available.")
    cache_slots: int | None = Field(
        None, ge=0, description="mlx-server: prompt caches kept for reuse (32); 0 turns prompt caching off."
    )
    cache_bytes: int | None = Field(
        None,
        gt=0,
        description="mlx-server: bytes of RAM the kept prompt caches may take (the machine's memory less the model's "
        "weights and a margin); the least recently used go to disk.",
    )
    cache_disk_bytes: int | None = Field(
        None,
        ge=0,
        description="mlx-server: bytes of disk for prompt caches evicted from RAM (10% of the free space in "
        "cacheDir); 0 keeps none.",
    )
    cache_dir: str | None = Field(
        None, description='mlx-server: where prompt caches are saved (<ANYCLAUDE_HOME>/cache); "" never saves.'
    )
    cache_persist_interval: float | None = Field(
        None,
        ge=0,
        description="mlx-server: most seconds a busy stretch goes unsaved (60); the prompt cache is saved when idle.",
    )
    warmup_file: str | None = Field(
        None, description="mlx-server: system prompt (text) or {messages, tools} JSON prefilled at startup."
    )
    warmup_tools: str | None = Field(None, description="mlx-server: JSON list of tools prefilled with warmupFile.")


class Applies(StrEnum):
    """How an edit of a backend key reaches a running backend (docs/reliability.md 14)."""

    LIVE = "live"  # read by the proxy for each request: nothing restarts
    SUPERVISOR = "supervisor"  # taken by the running supervisor in place: nothing restarts
    RESTART = "restart"  # the backend is replaced (blue/green, or in place on its own port)


# `claude` shapes the next Claude Code anyclaude starts; the backend never sees it.
_LIVE_KEYS = {"description", "context_length", "max_output_tokens", "claude"}
_SUPERVISOR_KEYS = {
    "startup_timeout",
    "stop_timeout",
    "health_interval",
    "health_timeout",
    "health_failures",
    "restart_delay",
    "restart_delay_max",
    "max_restarts",
    "stable_after",
    "breaker_failures",
    "breaker_reset_timeout",
}
# The one table: every backend key, by how an edit of it is applied. A key that also changes what is
# started (a kind passing contextLength to its server) restarts through the launch spec all the same.
BACKEND_KEY_APPLIES: dict[str, Applies] = {
    key: Applies.LIVE if key in _LIVE_KEYS else Applies.SUPERVISOR if key in _SUPERVISOR_KEYS else Applies.RESTART
    for key in BackendConfig.model_fields
}


def restart_keys_changed(old: BackendConfig | None, new: BackendConfig | None) -> list[str]:
    """The keys whose edit needs the backend replaced (camelCase, as written in the file)."""
    if old is None or new is None:
        return ["(entry)"] if old is not new else []
    return [
        to_camel(key)
        for key, applies in BACKEND_KEY_APPLIES.items()
        if applies is Applies.RESTART and getattr(old, key) != getattr(new, key)
    ]


class Config(_Model):
    """The whole `.anyclauderc.json`."""

    schema_: str | None = Field(None, alias="$schema", description="For editors: the schema of this file.")
    backend: str | None = Field(None, description="The active backend (mode) when --mode is not given.")
    host: str = Field("127.0.0.1", description="Address the proxy binds; a non-loopback one needs apiKey.")
    port: Port = Field(DEFAULT_PROXY_PORT, description="The proxy's port, the one Claude Code talks to.")
    api_key: SecretStr | None = Field(None, description="Key clients must send to the proxy (optional on loopback).")
    models: dict[str, str] = Field(default_factory=dict, description="Claude model id -> backend model.")
    backends: dict[str, BackendConfig] = Field(default_factory=dict, description="Name -> backend entry.")
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Size of one log file before it rotates.")
    log_backups: int = Field(5, ge=0, description="Rotated copies kept; 0 keeps one file, emptied when full.")
    # The proxy (launcher/bridge): defaults suit a local model on a laptop.
    log_bodies: bool = Field(
        False, description="Log request bodies at debug level and keep prompts and answers in the request log."
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none by default).")
    # A cold prefill of a 20k-token prompt on a CPU takes minutes: the first byte may be late.
    first_byte_timeout: Millis = Field(
        600_000,
        description="ms a backend may stay silent before its first token (any line it sends, prefill progress "
        "included, restarts the wait).",
    )
    stream_idle_timeout: Millis = Field(
        120_000, description="ms without output, once tokens flow, before a stream is failed."
    )
    ping_interval: Millis = Field(5_000, description="ms between pings while the client would otherwise hear nothing.")
    # Request headers are a few KB, sent at once by every real client; a connection still sending them after
    # 10 s is a slowloris or a dead peer holding a socket. (nginx allows 60 s on the open internet.)
    header_timeout: Millis = Field(10_000, description="ms a client gets to send its request headers; 0: no limit.")
    # A long local answer (a cold prefill, then a few thousand tokens on a CPU) takes minutes; a backend
    # switch or a Ctrl-C lets it finish rather than cut a running Claude Code turn.
    drain_timeout: Millis = Field(
        300_000, description="ms requests running on a replaced or stopping backend get to finish."
    )
    parse_tool_calls_from_text: bool = Field(True, description="Turn tool-call markup leaked as text into tool calls.")
    strip_billing_header: bool = Field(True, description="Drop Claude Code's per-conversation billing line.")
    # The request log (launcher/observe): `anyclaude requests`, `usage`, the dashboard.
    request_log: bool = Field(True, description="Keep a log of the proxy's requests (no prompt text) for usage, /ui.")
    # A month answers "how did this week compare with last"; older rows are deleted.
    request_log_max_days: float = Field(
        DEFAULT_REQUEST_LOG_DAYS, gt=0, description="Days a request stays in the request log."
    )
    # ~0.2 MB per 1,000 requests without bodies (bench/request_log_size.py): 64 MiB holds ~300,000 requests.
    request_log_max_bytes: int = Field(
        DEFAULT_REQUEST_LOG_BYTES, ge=65536, description="Size the request log may reach; the oldest rows go first."
    )


@dataclass(frozen=True)
class Settings:
    """A loaded config plus what the command line and environment chose, resolved once."""

    config: Config
    path: Path | None
    mode: str
    home: Home
    port: int
    parent_death_signal: bool = True
    # The file's text as it was validated: what config history keeps (a later edit may have changed it).
    text: str = field(default="", repr=False, compare=False)

    @property
    def entry(self) -> BackendConfig:
        return self.config.backends[self.mode]


# --------------------------------------------------------------------------------------------
# Loading


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """The config file to use: `--config`, `$ANYCLAUDE_CONFIG`, `./.anyclauderc.json`, `~/.anyclauderc.json`."""
    if explicit:
        return Path(explicit).expanduser()
    if env.get("ANYCLAUDE_CONFIG"):
        return Path(env["ANYCLAUDE_CONFIG"]).expanduser()
    for candidate in (cwd / CONFIG_NAME, Path(env.get("HOME", "~")).expanduser() / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    mode: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Find, read and validate the config and resolve the active backend.

    Raises:
        ConfigError: no file, unreadable file, broken JSON, failed validation, unknown mode.
    """
    env = dict(os.environ if env is None else env)
    path = find_config(config_path, env, cwd or Path.cwd())
    if path is None:
        raise ConfigNotFoundError(
            f"No {CONFIG_NAME} found (looked in --config, $ANYCLAUDE_CONFIG, ./{CONFIG_NAME}, ~/{CONFIG_NAME}).",
            hint="Write one here with `anyclaude init` (the full example), or pass --config FILE.",
        )
    text = read_config_text(path)
    config = parse_config_text(text, path, env)
    chosen = mode or env.get("ANYCLAUDE_MODE") or config.backend
    if chosen is None:
        raise ConfigError(
            f"{path}: backend: no backend chosen",
            hint=f'Pass --mode NAME or set "backend" (one of: {", ".join(sorted(config.backends)) or "none"}).',
        )
    if chosen not in config.backends:
        raise ConfigError(
            f"{path}: backends: there is no backend named '{chosen}'{did_you_mean(chosen, config.backends)}",
            hint=f"Known backends: {', '.join(sorted(config.backends)) or 'none'}.",
        )
    port = config.port
    if env.get("ANYCLAUDE_PORT"):
        try:
            port = _check_port(int(env["ANYCLAUDE_PORT"]))
        except (ValueError, PydanticCustomError):
            raise ConfigError(
                f"ANYCLAUDE_PORT: {env['ANYCLAUDE_PORT']!r} is not a valid port (1-65535)",
                hint="Unset it or give a number.",
            ) from None
    return Settings(
        config=config,
        path=path,
        mode=chosen,
        home=Home.from_env(env),
        port=port,
        # A test hook: lets tests play a launcher whose death does not take its backend along.
        parent_death_signal=env.get("ANYCLAUDE_PARENT_DEATH_SIGNAL", "1") != "0",
        text=text,
    )


def read_config_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="Check --config or $ANYCLAUDE_CONFIG.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})", hint="Check the file's permissions.") from None


def parse_config_file(path: Path, env: Mapping[str, str]) -> Config:
    """Read and validate one config file. Raises ConfigError naming the file and the field."""
    return parse_config_text(read_config_text(path), path, env)


def parse_config_text(text: str, path: Path, env: Mapping[str, str]) -> Config:
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty", hint="Write a JSON object (see .anyclauderc.example.json).")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})",
            hint="Fix the JSON (a trailing comma or a missing quote is the usual cause).",
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object", hint="Wrap the settings in { }.")
    cleaned = _expand(_drop_comments(raw), env)
    try:
        config = Config.model_validate(cleaned)
    except ValidationError as exc:
        raise config_error(path, exc, Config, BackendConfig) from None
    _cross_check(config, path)
    return _resolve_paths(config, path.parent.absolute())


def _resolve_paths(config: Config, base: Path) -> Config:
    """Make relative script, venv and model paths relative to the config file, not to the shell's cwd."""

    def resolve(value: str | None, always: bool) -> str | None:
        if not value:
            return value
        if value.startswith("~"):
            return str(Path(value).expanduser())
        if always or value.startswith(("./", "../")):
            return str((base / value).resolve()) if not Path(value).is_absolute() else value
        return value

    def prompt_file(claude: ClaudeStart) -> ClaudeStart:
        if claude.system_prompt in ("auto", "default", "compact"):
            return claude
        return claude.model_copy(update={"system_prompt": resolve(claude.system_prompt, always=True)})

    backends = {
        name: entry.model_copy(
            update={
                "server_script": resolve(entry.server_script, always=True),
                "python_venv": resolve(entry.python_venv, always=True),
                "model": resolve(entry.model, always=False),
                "claude": prompt_file(entry.claude),
            }
        )
        for name, entry in config.backends.items()
    }
    return config.model_copy(update={"backends": backends})


def _cross_check(config: Config, path: Path) -> None:
    """Checks that span fields; done after validation so the error can still name the field."""
    if config.backend is not None and config.backend not in config.backends:
        raise ConfigError(
            f"{path}: backend: '{config.backend}' is not one of the backends"
            f"{did_you_mean(config.backend, config.backends)}",
            hint=f"Known backends: {', '.join(sorted(config.backends)) or 'none defined'}.",
        )
    # docs/reliability.md 19: a proxy reachable from the network must ask for a key.
    if config.host not in LOOPBACK_HOSTS and config.api_key is None:
        raise ConfigError(
            f"{path}: host: binding the proxy to {config.host} exposes it to the network without a key",
            hint="Set apiKey (clients then send it as x-api-key), or bind 127.0.0.1.",
        )


def _drop_comments(value: Any) -> Any:
    """Remove keys beginning with `//` at every level: the file's way of writing comments."""
    if isinstance(value, dict):
        return {k: _drop_comments(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("//"))}
    if isinstance(value, list):
        return [_drop_comments(v) for v in value]
    return value


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string (an unset VAR without default is empty)."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    return value
