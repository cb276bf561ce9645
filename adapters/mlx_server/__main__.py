"""`python -m adapters.mlx_server --model PATH --port P`: the standalone server.

Model paths are checked before the port is bound: a wrong path is one line on stderr and exit
status 2, so a supervisor reports it at once. A model that is found but fails to load exits with
status 1 after the port was bound (`/health` says "failed" meanwhile).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from adapters.mlx_server.cache_warmup import read_warmup
from adapters.mlx_server.config import (
    DEFAULT_CACHE_LIMIT_BYTES,
    DEFAULT_CACHE_PERSIST_INTERVAL,
    DEFAULT_CACHE_SLOTS,
    DEFAULT_DECODE_CONCURRENCY,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PREFILL_CONCURRENCY,
    DEFAULT_PREFILL_STEP,
    DEFAULT_SPECULATIVE,
    SPECULATIVE_MODES,
    ModelNotFoundError,
    ModelSpec,
    ServerConfig,
    validate_models,
)
from adapters.mlx_server.process import configure_process

EXIT_BAD_CONFIG = 2
EXIT_LOAD_FAILED = 1
_GB = 1024**3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.mlx_server",
        description="OpenAI-compatible server for local MLX models (never downloads).",
    )
    parser.add_argument("--model", required=True, help="model folder, or a Hugging Face id already in the cache")
    parser.add_argument("--alias", help="name clients use for --model (default: the folder's name)")
    parser.add_argument(
        "--extra-model",
        action="append",
        default=[],
        metavar="ALIAS=PATH",
        help="another model, loaded on first use (repeatable)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--context-length", type=int, help="context window in tokens (default: from the model)")
    parser.add_argument(
        "--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="requests waiting beyond those running (then 503)"
    )
    parser.add_argument(
        "--decode-concurrency",
        type=int,
        default=DEFAULT_DECODE_CONCURRENCY,
        help="requests generating together in one batch (1: one at a time)",
    )
    parser.add_argument(
        "--prefill-concurrency",
        type=int,
        default=DEFAULT_PREFILL_CONCURRENCY,
        help="requests reading their prompts together",
    )
    parser.add_argument("--memory-limit", type=float, help="GB of model weights kept loaded (LRU eviction)")
    parser.add_argument(
        "--cache-limit", type=float, default=DEFAULT_CACHE_LIMIT_BYTES / _GB, help="GB of MLX buffer cache kept"
    )
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="default max_tokens")
    parser.add_argument("--prefill-step", type=int, default=DEFAULT_PREFILL_STEP, help=argparse.SUPPRESS)
    parser.add_argument(
        "--tool-parser",
        metavar="NAME",
        help="force a tool-call format: a parser the installed mlx-lm ships (mlx-lm then parses it), or hermes, "
        "harmony, llama3_json; default: the format mlx-lm infers from the chat template. "
        f"Known: {', '.join(_known_parsers())}",
    )
    parser.add_argument(
        "--speculative",
        choices=SPECULATIVE_MODES,
        default=DEFAULT_SPECULATIVE,
        help="speculative decoding for a request decoding alone: ngram drafts from its prompt and reply; off",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="for requests that set no temperature")
    parser.add_argument("--top-p", type=float, default=1.0, help="for requests that set no top_p")
    parser.add_argument("--cpu-only", action="store_true", help="run on the CPU even when a GPU is available")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    cache = parser.add_argument_group("prompt cache")
    cache.add_argument(
        "--cache-slots", type=int, default=DEFAULT_CACHE_SLOTS, help="prompt caches kept for reuse (0: none)"
    )
    cache.add_argument(
        "--cache-bytes",
        type=int,
        default=None,
        help="bytes of RAM the kept prompt caches may take (default: the machine's memory less the model and a margin)",
    )
    cache.add_argument(
        "--cache-disk-bytes",
        type=int,
        default=None,
        help="bytes of disk prompt caches evicted from RAM may take (default: 10%% of the free space; 0: none)",
    )
    cache.add_argument(
        "--cache-dir",
        default=None,
        help="where prompt caches are saved (default: $ANYCLAUDE_HOME/cache or ~/.anyclaude/cache; '' to never save)",
    )
    cache.add_argument(
        "--cache-persist-interval",
        type=float,
        default=DEFAULT_CACHE_PERSIST_INTERVAL,
        help="longest a busy stretch goes without a prompt-cache save (saved whenever idle and at exit; 0: only then)",
    )
    cache.add_argument("--warmup-file", type=Path, help="system prompt (text) or {messages, tools} JSON to prefill")
    cache.add_argument("--warmup-tools", type=Path, help="JSON list of tools prefilled with the warmup prompt")
    return parser


def default_cache_dir() -> Path:
    """`$ANYCLAUDE_HOME/cache`, else `~/.anyclaude/cache` (the server's own environment, read at startup)."""
    home = os.environ.get("ANYCLAUDE_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".anyclaude") / "cache"


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Raises ValueError for malformed options."""
    models = [ModelSpec(args.alias or default_alias(args.model), args.model)]
    for item in args.extra_model:
        alias, sep, path = item.partition("=")
        if not sep or not alias or not path:
            raise ValueError(f"--extra-model {item!r}: expected ALIAS=PATH")
        models.append(ModelSpec(alias, path))
    return ServerConfig(
        models=tuple(models),
        host=args.host,
        port=args.port,
        context_length=args.context_length,
        max_queue=args.max_queue,
        decode_concurrency=args.decode_concurrency,
        prefill_concurrency=args.prefill_concurrency,
        memory_limit_bytes=int(args.memory_limit * _GB) if args.memory_limit else None,
        cache_limit_bytes=int(args.cache_limit * _GB),
        default_max_tokens=args.max_tokens,
        prefill_step=args.prefill_step,
        tool_parser=args.tool_parser,
        speculative=args.speculative,
        temperature=args.temperature,
        top_p=args.top_p,
        cpu_only=args.cpu_only,
        log_level=args.log_level,
        cache_slots=args.cache_slots,
        cache_bytes=args.cache_bytes,
        cache_disk_bytes=args.cache_disk_bytes,
        cache_dir=_cache_dir(args.cache_dir),
        cache_persist_interval=args.cache_persist_interval,
        warmup_file=args.warmup_file,
        warmup_tools=args.warmup_tools,
    )


def _cache_dir(given: str | None) -> Path | None:
    if given is None:
        return default_cache_dir()
    return Path(given).expanduser() if given else None


def default_alias(source: str) -> str:
    """A model's name when none is given: the folder name, or the Hugging Face id as written."""
    path = Path(source).expanduser()
    return path.name if path.exists() or source.startswith(("/", "~", ".")) else source


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is stopped; returns the exit status."""
    # Before anything imports huggingface_hub or transformers: they read the offline settings once, at import.
    configure_process(own_process=True)
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        validate_models(config)
        _check_tool_parser(config.tool_parser)
        read_warmup(config.warmup_file, config.warmup_tools)
    except (ValueError, ModelNotFoundError) as exc:
        print(f"mlx-server: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return serve(config)


def serve(config: ServerConfig) -> int:
    import uvicorn

    from adapters.mlx_server.app import create_app

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_fatal=on_fatal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=False,
            # Streams still open at shutdown get this long before they are cut (then lifespan stops the engine).
            timeout_graceful_shutdown=3,
        )
    )
    server.run()
    if failure:
        print(f"mlx-server: error: {failure[0]}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    return 0 if server.started else EXIT_LOAD_FAILED


def _known_parsers() -> list[str]:
    from adapters.mlx_server.mlx_tools import known_tool_parsers

    return sorted(known_tool_parsers())


def _check_tool_parser(name: str | None) -> None:
    """Refuse a `--tool-parser` that neither mlx-lm nor we know, naming those that exist."""
    known = _known_parsers() if name is not None else []
    if name is not None and name not in known:
        raise ValueError(f"unknown tool parser {name!r}; known: {', '.join(known)}")


if __name__ == "__main__":
    sys.exit(main())
