"""Our MLX server with its prompt-cache folder on a full disk (docs/reliability.md 26): requests go on, the
failure is said once with how to free space, and the slots are saved once there is room again.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness import full_tmpfs
from tests.integration.mlx_server_process import ServerProcess, poll, start_server, stop_server
from tests.tiny_model import tiny_model  # noqa: F401  (fixture)

SYSTEM = "You are a careful assistant. Tools can read files, write files, list folders and run commands. " * 4


def ask(server: ServerProcess, question: str) -> None:
    body = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}], "max_tokens": 4}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text


def persistence(server: ServerProcess) -> dict[str, object]:
    described: dict[str, object] = httpx.get(server.url + "/v1/cache", timeout=10).json()["persistence"]
    return described


def test_a_full_cache_disk_is_said_once_and_saving_resumes_when_space_returns(
    tiny_model: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    with full_tmpfs(disk) as filler:
        server = start_server(tiny_model, tmp_path, ["--cache-dir", str(disk / "cache")])
        try:
            for attempt, question in enumerate(("First?", "Second?", "Third?"), start=1):
                ask(server, question)  # each followed by an idle save that fails
                assert poll(lambda n=attempt: persistence(server)["failed_writes"] == n, 10), persistence(server)
            assert persistence(server)["error"]  # MLX says "Unable to write 8 bytes to file."
            log = server.log()
            assert log.count("prompt cache: cannot save to") == 1, log
            assert "free space on that disk" in log and "Traceback" not in log
            assert not list((disk / "cache").rglob("*.safetensors"))
            filler.unlink()
            ask(server, "Fourth?")
            assert poll(lambda: "saving works again" in server.log(), 10), server.log()
            saved = list((disk / "cache").rglob("*.safetensors"))
            assert len(saved) >= 3, saved  # the slots whose writes failed were written too
            assert poll(lambda: persistence(server)["unsaved_tokens"] == 0, 10)
            assert persistence(server)["error"] is None
        finally:
            stop_server(server)
