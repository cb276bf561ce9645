"""Server settings as plain dataclasses, and the offline lookup of the model folders they name.

Everything here runs before the port is bound: a model that cannot be found is reported on stderr
and the process exits non-zero, so a supervisor sees the failure at once instead of a health timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The client-facing name of the default model when none is configured.
# Claude Code sends up to 32,000-64,000 as max_tokens; a request without one gets this many.
DEFAULT_MAX_TOKENS = 4096
# Past this much free-buffer cache MLX keeps for reuse, it is returned to the system between requests.
DEFAULT_CACHE_LIMIT_BYTES = 1 << 30
# Prompts are prefilled in chunks of this many tokens (mlx-lm uses 2048; smaller keeps cancellation snappy).
DEFAULT_PREFILL_STEP = 512
# Prompt-cache slots: a main conversation, its side requests (titles, summaries), Claude Code's parallel
# subagents (up to 20 at once in current versions) and a few other sessions; `cacheBytes` bounds the memory.
DEFAULT_CACHE_SLOTS = 32
# Requests decoding together in one batch and reading their prompts together (mlx_lm.server's defaults). With 4
# at once, 8 subagents sending their turns together started as two groups a prefill apart, and stayed apart at
# every turn, the batch running short at each group's end (measured: 8 sessions in lockstep, 45.0 s with 8 vs
# 49.5 s with 4). A short request still passes a long prompt instead of waiting for all of it.
DEFAULT_DECODE_CONCURRENCY = 32
DEFAULT_PREFILL_CONCURRENCY = 8
# Requests waiting beyond those running before more are refused with 503.
DEFAULT_MAX_QUEUE = 8
# Memory the kept prompt caches may take (SmolLM2-135M needs ~46 KB per token, a 30B model ~200 KB) and disk
# the evicted ones may take: None sizes them from the machine (`cache_budget.py`).
# Speculative decoding for a request decoding alone: "ngram" drafts from the request's own tokens, "off".
SPECULATIVE_MODES = ("ngram", "off")
DEFAULT_SPECULATIVE = "off"
# Seconds between prompt-cache saves while requests keep the server busy (it also saves when idle and at exit).
DEFAULT_CACHE_PERSIST_INTERVAL = 60.0


class ModelNotFoundError(Exception):
    """A configured model is neither a local folder nor in the local Hugging Face cache."""


@dataclass(frozen=True)
class ModelSpec:
    """One servable model: the name clients use and where its files are (as configured)."""

    alias: str
    source: str


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; built once from the command line (or by an embedding host).

    `models[0]` is the default model: loaded before the server reports ready, used for requests
    that name no model or a `claude-*` id. The others load on first use.
    """

    models: tuple[ModelSpec, ...]
    host: str = "127.0.0.1"
    port: int = 8081
    context_length: int | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    decode_concurrency: int = DEFAULT_DECODE_CONCURRENCY
    prefill_concurrency: int = DEFAULT_PREFILL_CONCURRENCY
    memory_limit_bytes: int | None = None
    cache_limit_bytes: int = DEFAULT_CACHE_LIMIT_BYTES
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    # Sampling for requests that set none (OpenAI's defaults; a config can make a backend steadier).
    temperature: float = 1.0
    top_p: float = 1.0
    prefill_step: int = DEFAULT_PREFILL_STEP
    tool_parser: str | None = None
    speculative: str = DEFAULT_SPECULATIVE
    cpu_only: bool = False
    log_level: str = "info"
    cache_slots: int = DEFAULT_CACHE_SLOTS
    cache_bytes: int | None = None
    cache_disk_bytes: int | None = None
    # Where prompt-cache slots are saved (a folder per model fingerprint); None: never saved.
    cache_dir: Path | None = None
    cache_persist_interval: float = DEFAULT_CACHE_PERSIST_INTERVAL
    warmup_file: Path | None = None
    warmup_tools: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("at least one model is required")
        aliases = [m.alias for m in self.models]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"model aliases must be distinct, got {aliases}")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.decode_concurrency < 1 or self.prefill_concurrency < 1:
            raise ValueError("decode_concurrency and prefill_concurrency must be >= 1")
        if self.speculative not in SPECULATIVE_MODES:
            raise ValueError(f"speculative must be one of {', '.join(SPECULATIVE_MODES)}, got {self.speculative!r}")
        if self.cache_slots < 0 or (self.cache_bytes or 1) <= 0 or self.cache_persist_interval < 0:
            raise ValueError("cache_slots must be >= 0, cache_bytes > 0 and cache_persist_interval >= 0")
        if self.cache_disk_bytes is not None and self.cache_disk_bytes < 0:
            raise ValueError("cache_disk_bytes must be >= 0")

    @property
    def default_alias(self) -> str:
        return self.models[0].alias


def resolve_model_path(source: str) -> Path:
    """Find a model folder without touching the network.

    Args:
        source: a local path (`~` allowed) or a Hugging Face repo id already in the local cache.

    Returns:
        The folder holding `config.json`.

    Raises:
        ModelNotFoundError: with a message saying what was tried and what to do.
    """
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"model path {local} is a file; give the folder holding config.json")
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {local} has no config.json; is it an MLX model folder?")
        return local.resolve()
    looks_like_repo_id = source.count("/") == 1 and not source.startswith(("/", "~", "."))
    if not looks_like_repo_id:
        raise ModelNotFoundError(f"model path {local} does not exist")
    cached = _cached_snapshot(source)
    if cached is None:
        raise ModelNotFoundError(
            f"model '{source}' is not a local folder and is not in the local Hugging Face cache "
            "(the server never downloads); download it first (e.g. `hf download " + source + "`) "
            "or give a local path"
        )
    return cached


def _cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id`, or None; works offline only."""
    # A read of the local cache only: nothing here reaches the Hub (process.py owns the offline settings).
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(found, str):
        return None
    return Path(found).parent


def validate_models(config: ServerConfig) -> dict[str, Path]:
    """Resolve every configured model; alias -> folder. Raises ModelNotFoundError naming the alias."""
    resolved: dict[str, Path] = {}
    for spec in config.models:
        try:
            resolved[spec.alias] = resolve_model_path(spec.source)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"model '{spec.alias}': {exc}") from None
    return resolved
