"""The server's moving parts in one object: model pool, generation engine, readiness.

Whoever owns the event loop's lifespan starts and stops it: the standalone app's own lifespan, or a
host app that mounts this server in-process (Starlette does not run a mounted app's lifespan, so the
host enters `runtime.lifespan()` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.engine import Engine
from adapters.mlx_server.pool import LoadedModel, ModelPool
from adapters.mlx_server.prompt_cache import FreshPromptCache, PromptCacheStore

log = logging.getLogger("anyclaude.mlx_server")


class Readiness(StrEnum):
    STOPPED = "stopped"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class Runtime:
    """Pool + engine + readiness. `await start()` returns at once; the default model loads behind it.

    Args:
        config: server settings.
        paths: alias -> resolved model folder (`config.validate_models`).
        cache_store: where the engine gets starting KV caches (the seam for prompt caching).
        on_fatal: called with a message when the default model cannot be loaded (standalone: exit).
    """

    def __init__(
        self,
        config: ServerConfig,
        paths: dict[str, Path],
        cache_store: PromptCacheStore | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.cache_store = cache_store or FreshPromptCache()
        self.pool = ModelPool(config, paths, self.cache_store)
        self.engine = Engine(config, self.cache_store)
        self.readiness = Readiness.STOPPED
        self.error: str | None = None
        self._on_fatal = on_fatal
        self._loader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the generation thread and begin loading the default model."""
        if self.readiness is not Readiness.STOPPED:
            return
        self.readiness = Readiness.LOADING
        self.engine.start()
        self._loader = asyncio.create_task(self._load_default(), name="mlx-load-default")

    async def stop(self) -> None:
        """Cancel queued and running generations, stop the thread, drop the models."""
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        # join() blocks; off the loop so other shutdown work (closing streams) proceeds meanwhile.
        await asyncio.to_thread(self.engine.stop)
        self.pool.unload_all()
        self.readiness = Readiness.STOPPED

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def model(self, alias: str) -> LoadedModel:
        """The model for `alias`, loading it on the generation thread when it is not in memory."""
        found = self.pool.loaded(alias)
        if found is not None:
            return found
        return await asyncio.wrap_future(self.engine.call(lambda: self.pool.load(alias)))

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.readiness.value, "model": self.pool.default_alias}
        if self.error:
            body["error"] = self.error
        body["models"] = self.pool.snapshot()
        body["queue"] = self.engine.stats()
        body["memory"] = memory_figures(self.config) if self.readiness is Readiness.READY else None
        return body

    async def _load_default(self) -> None:
        try:
            await self.model(self.pool.default_alias)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.readiness = Readiness.FAILED
            self.error = f"cannot load model '{self.pool.default_alias}': {exc}"
            log.error("%s", self.error)
            if self._on_fatal is not None:
                self._on_fatal(self.error)
            return
        self.readiness = Readiness.READY
        log.info("ready: serving %s", ", ".join(self.pool.aliases))


def memory_figures(config: ServerConfig) -> dict[str, Any]:
    """MLX's memory counters in bytes (process-wide; safe to read from any thread)."""
    import mlx.core as mx

    return {
        "active_bytes": int(mx.get_active_memory()),
        "peak_bytes": int(mx.get_peak_memory()),
        "cache_bytes": int(mx.get_cache_memory()),
        "cache_limit_bytes": config.cache_limit_bytes,
        "model_limit_bytes": config.memory_limit_bytes,
    }
