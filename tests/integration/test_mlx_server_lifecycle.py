"""Our MLX server under load, disconnects and bad start-up input: real processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.integration.mlx_server_process import (
    REPO,
    ServerProcess,
    free_port,
    poll,
    port_is_open,
    start_server,
    stop_server,
)
from tests.tiny_model import tiny_model, tiny_model_dir  # noqa: F401  (fixtures)

USER = [{"role": "user", "content": "Tell me a long story."}]
# About four seconds of generation for the tiny model: long enough to queue behind and to cancel.
LONG = {"messages": USER, "max_tokens": 1900, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:  # noqa: F811
    # Started through the thin script, as `serverScript` configs run it.
    args = ["--max-queue", "1", "--decode-concurrency", "2"]
    started = start_server(tiny_model, tmp_path_factory.mktemp("logs"), args, entry=["scripts/mlx-server.py"])
    yield started
    stop_server(started)


def queue(server: ServerProcess) -> dict[str, int]:
    figures: dict[str, int] = server.health()["queue"]  # type: ignore[assignment]
    return figures


def test_full_queue_is_503_with_retry_after(server: ServerProcess) -> None:
    before = queue(server)["cancelled"]
    with httpx.Client(base_url=server.url, timeout=30) as http, ExitStack() as streams:
        for _ in range(2):  # decode concurrency 2: both run together
            streams.enter_context(http.stream("POST", "/v1/chat/completions", json=LONG))
        assert poll(lambda: queue(server)["running"] == 2, 10), queue(server)
        streams.enter_context(http.stream("POST", "/v1/chat/completions", json=LONG))
        assert poll(lambda: queue(server)["waiting"] == 1, 10), queue(server)
        refused = http.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["code"] == "queue_full"
    # The streams were closed unfinished: the waiting one leaves the queue, the running ones stop.
    assert poll(lambda: queue(server)["running"] == 0 and queue(server)["waiting"] == 0, 5), queue(server)
    assert queue(server)["cancelled"] == before + 3


def test_client_disconnect_cancels_generation(server: ServerProcess) -> None:
    before = queue(server)
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=LONG) as response,
    ):
        for line in response.iter_lines():
            if '"content":"' in line and '"role"' not in line:
                break  # a token arrived: drop the connection mid-generation
    closed = time.monotonic()
    assert poll(lambda: not queue(server)["running"], 3), queue(server)
    after = queue(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["served"] == before["served"] + 1
    reply = httpx.post(server.url + "/v1/chat/completions", json={"messages": USER, "max_tokens": 3}, timeout=30)
    assert reply.status_code == 200
    assert time.monotonic() - closed < 3, "the next request waited for the cancelled generation"


def test_bad_model_path_exits_before_binding(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "adapters.mlx_server", "--model", str(tmp_path / "missing"), "--port", str(port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{tmp_path / 'missing'} does not exist" in result.stderr
    assert "Uvicorn running" not in result.stderr and not port_is_open(port)
    assert time.monotonic() - started < 10


def test_hugging_face_id_not_in_local_cache_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adapters.mlx_server", "--model", "someone/not-cached", "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 2
    assert "not in the local Hugging Face cache" in result.stderr


def test_model_that_fails_to_load_exits_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = subprocess.run(
        [sys.executable, "-m", "adapters.mlx_server", "--model", str(broken), "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot load model 'broken'" in result.stderr
