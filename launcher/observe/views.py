"""What the dashboard and `/metrics` read from the running stack: snapshots, never decisions.

The stack's backend changes on a config swap, so every function here reads `stack.backend` afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from launcher.observe.metrics import BackendView
from launcher.supervision import statefile

if TYPE_CHECKING:
    from launcher.config import Settings
    from launcher.paths import Home
    from launcher.stack import Backend


class StackView(Protocol):
    """All that observability reads of the running stack: the backend serving now, the settings, and the
    proxy's address once it listens (None before)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def proxy_address(self) -> str | None: ...


# A scrape must not hang on a busy backend: its queue depth is skipped after this long.
QUEUE_PROBE_TIMEOUT = 0.5
# The dashboard's log tail: this much of the end of a log on first sight, and per update at most.
TAIL_BYTES = 32 * 1024


async def backend_state(stack: StackView) -> dict[str, Any]:
    """The serving backend as the dashboard shows it, plus other backends the state files know (those are
    read on a thread: the state files, and each launcher's process, are looked at every second per page)."""
    backend = stack.backend
    supervisor = backend.supervisor
    current = {
        "name": backend.spec.name,
        "kind": backend.spec.kind,
        "state": str(supervisor.state),
        "reason": supervisor.reason,
        "restarts": supervisor.restarts,
        "breaker": supervisor.breaker.snapshot(),
        "pid": supervisor.pid,
        "port": backend.spec.port,
        "model": backend.upstream.model or backend.spec.model_name or _configured_model(stack, backend.spec.name),
        "serving": True,
        "prompt_cache": await prompt_cache(backend),
    }
    return {
        "mode": stack.settings.mode,
        "config": str(stack.settings.path) if stack.settings.path else None,
        "backends": [current, *await asyncio.to_thread(_other_backends, stack.settings.home, backend.spec.name)],
    }


def _other_backends(home: Home, serving: str) -> list[dict[str, Any]]:
    others = []
    for record in statefile.list_records(home):
        if record.name == serving or statefile.launcher_alive(record) is None:
            continue
        others.append(
            {
                "name": record.name,
                "kind": record.kind,
                "state": record.state,
                "reason": record.reason,
                "restarts": record.restarts,
                "breaker": record.breaker,
                "pid": record.pid,
                "port": record.port,
                "model": None,
                "serving": False,
            }
        )
    return others


def _configured_model(stack: StackView, name: str) -> str | None:
    entry = stack.settings.config.backends.get(name)
    return entry.model if entry is not None else None


async def queue_depth(backend: Backend) -> dict[str, Any]:
    """The backend's queue as its health endpoint reports it (our MLX server); {} for other kinds."""
    if backend.embedded is not None:
        with contextlib.suppress(Exception):
            queue = backend.embedded.health().get("queue")
            return dict(queue) if isinstance(queue, dict) else {}
        return {}
    url = backend.spec.health_url
    if backend.spec.kind != "mlx-server" or not url:
        return {}
    try:
        async with httpx.AsyncClient(timeout=QUEUE_PROBE_TIMEOUT, trust_env=False) as client:
            body = (await client.get(url)).json()
    except (httpx.HTTPError, ValueError):
        return {}
    queue = body.get("queue") if isinstance(body, dict) else None
    return dict(queue) if isinstance(queue, dict) else {}


async def prompt_cache(backend: Backend) -> dict[str, Any] | None:
    """Both tiers of our MLX server's prompt cache as its `/v1/cache` says (RAM and disk: slots, bytes, budget,
    hits; loads from disk and their time); None for other kinds or when it does not answer."""
    if backend.embedded is not None:
        with contextlib.suppress(Exception):
            return _cache_tiers(backend.embedded.cache_store.describe())
        return None
    url = backend.spec.health_url
    if backend.spec.kind != "mlx-server" or not url:
        return None
    try:
        async with httpx.AsyncClient(timeout=QUEUE_PROBE_TIMEOUT, trust_env=False) as client:
            body = (await client.get(httpx.URL(url).copy_with(path="/v1/cache", query=None))).json()
    except (httpx.HTTPError, ValueError):
        return None
    return _cache_tiers(body) if isinstance(body, dict) else None


def _cache_tiers(body: dict[str, Any]) -> dict[str, Any] | None:
    if not body.get("enabled"):
        return None
    totals, disk = body.get("totals") or {}, body.get("disk") or {}
    return {
        "ram": {
            "slots": totals.get("slots"),
            "bytes": totals.get("bytes"),
            "max_bytes": totals.get("max_bytes"),
            "hits": totals.get("hits_ram", totals.get("hits")),
        },
        "disk": {key: disk.get(key) for key in ("slots", "bytes", "max_bytes", "hits", "loads", "load_s")},
    }


async def metrics_view(stack: StackView) -> BackendView:
    backend = stack.backend
    supervisor = backend.supervisor
    return BackendView(
        name=backend.spec.name,
        state=str(supervisor.state),
        restarts=supervisor.restarts,
        breaker=str(supervisor.breaker.snapshot().get("state", "closed")),
        queue=await queue_depth(backend),
    )


def log_names(logs: Path) -> list[str]:
    """The logs the dashboard may show: the files in `$ANYCLAUDE_HOME/logs` (never a path from a request)."""
    if not logs.is_dir():
        return []
    return sorted(p.stem for p in logs.glob("*.log"))


class LogTail:
    """New lines of one log since the last call; follows rotation (a new file, or a shorter one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def read(self) -> list[str]:
        try:
            info = os.stat(self.path)
        except OSError:
            return []
        cut = False
        if self._inode is None:
            self._offset = max(0, info.st_size - TAIL_BYTES)
            cut = self._offset > 0  # a tail taken mid-file starts with a torn line
        elif info.st_ino != self._inode or info.st_size < self._offset:
            self._offset, self._partial = 0, b""
        self._inode = info.st_ino
        if info.st_size <= self._offset:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read(TAIL_BYTES)
        except OSError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [line.decode("utf-8", errors="replace") for line in lines[1 if cut else 0 :]]
