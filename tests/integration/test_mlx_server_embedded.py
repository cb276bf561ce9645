"""Our MLX server mounted inside another app, in-process, as the proxy runs an `embedded` backend."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from adapters.mlx_server.app import create_app
from adapters.mlx_server.config import ModelSpec, ServerConfig
from tests.integration.mlx_server_process import free_port, poll, port_is_open
from tests.tiny_model import tiny_model, tiny_model_dir  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def host_url(tiny_model: Path) -> Iterator[str]:  # noqa: F811
    inner = create_app(ServerConfig(models=(ModelSpec("tiny", str(tiny_model)),)), embedded=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # A mounted app's own lifespan never runs: the host enters the runtime's.
        async with inner.state.runtime.lifespan():
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/backends/mlx", inner)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/backends/mlx"
    assert poll(lambda: port_is_open(port), 30)
    yield url
    server.should_exit = True
    thread.join(15)
    assert not thread.is_alive() and not port_is_open(port)
    assert inner.state.runtime.readiness.value == "stopped"


def test_mounted_server_becomes_ready_and_generates(host_url: str) -> None:
    def ready() -> bool:
        return httpx.get(host_url + "/health", timeout=5).status_code == 200

    assert poll(ready, 30)
    reply = httpx.post(
        host_url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 4
    models = httpx.get(host_url + "/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
