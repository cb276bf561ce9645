"""The server's moving parts in one object: model pool, generation engine, readiness.

Whoever owns the event loop's lifespan starts and stops it: the standalone app's own lifespan, or a
host app that mounts this server in-process (Starlette does not run a mounted app's lifespan, so the
host enters `runtime.lifespan()` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from adapters.mlx_server.cache_budget import cache_budgets
from adapters.mlx_server.cache_warmup import prepare_model_cache
from adapters.mlx_server.config import ServerConfig
from adapters.mlx_server.engine import Engine
from adapters.mlx_server.pool import LoadedModel, ModelPool
from adapters.mlx_server.process import configure_process
from adapters.mlx_server.prompt_cache import PromptCacheStore, SlotPromptCache, build_prompt_cache

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
        cache_store: where the engine gets starting KV caches (default: prompt-cache slots as configured).
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
        if cache_store is None:
            ram, disk = cache_budgets(config, paths.get(config.default_alias))
            if config.cache_slots > 0:
                log.info("prompt cache: %s; %s", ram.describe(), disk.describe())
            cache_store = build_prompt_cache(config.cache_slots, ram.bytes, config.cache_persist_interval, disk.bytes)
        self.cache_store = cache_store
        self.pool = ModelPool(config, paths, self.cache_store)
        self.engine = Engine(config, self.cache_store)
        self.readiness = Readiness.STOPPED
        self.error: str | None = None
        self._on_fatal = on_fatal
        self._loader: asyncio.Task[None] | None = None
        self._persister: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the generation thread and begin loading the default model."""
        if self.readiness is not Readiness.STOPPED:
            return
        self.readiness = Readiness.LOADING
        configure_process(own_process=False)  # the server's own process did more already (__main__)
        self.engine.start()
        self._loader = asyncio.create_task(self._load_default(), name="mlx-load-default")
        interval = self.config.cache_persist_interval
        if isinstance(self.cache_store, SlotPromptCache) and self.config.cache_dir is not None and interval > 0:
            self._persister = asyncio.create_task(self._persist_periodically(interval), name="mlx-cache-persist")

    async def stop(self) -> None:
        """Cancel queued and running generations, stop the thread, drop the models."""
        for task in (self._loader, self._persister):
            if task is not None and not task.done():
                task.cancel()
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
        return await asyncio.wrap_future(self.engine.call(lambda: self._load(alias)))

    def _load(self, alias: str) -> LoadedModel:
        """Load a model and its prompt cache (saved slots; the warmup for the default). Generation thread."""
        if (found := self.pool.loaded(alias)) is not None:
            return found
        loaded = self.pool.load(alias)
        prepare_model_cache(self.cache_store, loaded, self.config, warm=alias == self.pool.default_alias)
        return loaded

    async def _persist_periodically(self, interval: float) -> None:
        """Save the prompt cache once `interval` has passed without any save.

        The engine saves whenever it goes idle, which is when a save costs nobody anything. This timer only
        bounds what a crash in a long busy stretch loses; a write then competes with the running request for
        the CPU, so it waits `interval` after the last save of either kind, not after its own.
        """
        attempted = time.monotonic()
        while True:
            delay = max(self.cache_store.flushed_at, attempted) + interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            attempted = time.monotonic()
            try:
                # Through the engine's queue: slot arrays are only touched on the generation thread.
                await asyncio.wrap_future(self.engine.call(self.cache_store.flush))
            except Exception:
                log.exception("prompt cache: periodic save failed")

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
