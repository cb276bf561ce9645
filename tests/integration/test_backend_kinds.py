"""Each backend kind started for real through `anyclaude serve`, on the tiny generated model, and asked one
question through the proxy with the official anthropic SDK.

mlx-server (ours), mlx-lm (official mlx_lm.server), script (legacy mode running scripts/mlx-server.py),
remote (a local OpenAI-compatible server anyclaude does not start), llama-cpp (llama.cpp's llama-server,
built once by scripts/build-llama-server.sh, on SmolLM2's GGUF), and mlx-textgen when a virtual
environment with MLX-Textgen is named by $ANYCLAUDE_TEXTGEN_VENV (`.ci/run` makes one).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from launcher.supervision.ports import free_port
from tests.harness import ROOT, Serve, start_serve
from tests.integration.mlx_server_process import start_server, stop_server
from tests.llama_server import BUILD_HINT, find_llama_server, smollm2_gguf

MAX_TOKENS = 4  # the tiny model's output is gibberish and never ends on its own


def ask(s: Serve, timeout: float = 120) -> anthropic.types.Message:
    client = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=timeout)
    return client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=MAX_TOKENS,
        extra_body={"temperature": 0.0},  # the same answer every run
        messages=[{"role": "user", "content": "hello"}],
    )


@pytest.fixture
def serve_kind(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(name: str, entry: dict[str, Any]) -> Serve:
        s = start_serve(tmp_path, entry={"command": None, "startupTimeout": 120_000, **entry}, name=name)
        started.append(s)
        s.wait_state("READY", timeout=120)
        return s

    yield start
    for s in started:
        s.close()


def assert_answered(s: Serve) -> None:
    reply = ask(s)
    # A random model may pick its end token early; it can never run past max_tokens.
    assert 1 <= reply.usage.output_tokens <= MAX_TOKENS
    assert reply.stop_reason == ("max_tokens" if reply.usage.output_tokens == MAX_TOKENS else "end_turn")
    assert reply.content and reply.content[0].type == "text"


def test_mlx_server_kind(serve_kind: Any, tiny_model: Path) -> None:
    s = serve_kind("mlx", {"type": "mlx-server", "model": str(tiny_model), "port": free_port()})
    assert_answered(s)
    assert "adapters.mlx_server" in " ".join(_cmdline(s))


def test_official_mlx_lm_kind(serve_kind: Any, tiny_model: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    hub.mkdir()
    entry = {"model": str(tiny_model), "port": free_port(), "env": {"HF_HUB_CACHE": str(hub)}}
    s = serve_kind("mlx-lm", entry)
    assert_answered(s)
    assert "mlx_lm" in " ".join(_cmdline(s))


def test_legacy_script_kind_runs_scripts_mlx_server(serve_kind: Any, tiny_model: Path) -> None:
    entry = {"serverScript": str(ROOT / "scripts" / "mlx-server.py"), "model": str(tiny_model), "port": free_port()}
    s = serve_kind("mlx-legacy", entry)
    assert_answered(s)
    assert "scripts/mlx-server.py" in " ".join(_cmdline(s))


def test_remote_kind_probes_a_server_it_did_not_start(serve_kind: Any, tiny_model: Path, tmp_path: Path) -> None:
    server = start_server(tiny_model, tmp_path)
    try:
        s = serve_kind("lmstudio", {"baseUrl": f"{server.url}/v1", "model": tiny_model.name})
        assert_answered(s)
        assert s.record() is not None and s.record()["pid"] is None  # type: ignore[index]
    finally:
        stop_server(server)


@pytest.mark.skipif(
    not os.environ.get("ANYCLAUDE_TEXTGEN_VENV"), reason="no MLX-Textgen venv ($ANYCLAUDE_TEXTGEN_VENV)"
)
def test_mlx_textgen_kind(serve_kind: Any, tiny_model: Path) -> None:
    venv = os.environ["ANYCLAUDE_TEXTGEN_VENV"]
    entry = {"model": str(tiny_model), "port": free_port(), "pythonVenv": venv}
    s = serve_kind("mlx-textgen", entry)
    assert_answered(s)


@pytest.fixture
def llama_server() -> Path:
    """The llama-server binary; CI (`.ci/run` builds it when it is missing) must have one."""
    binary = find_llama_server()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"llama-server was not found in CI: {BUILD_HINT}")
        pytest.skip(f"llama-server was not found: {BUILD_HINT}")
    return binary


@pytest.mark.slow
def test_llama_cpp_kind_passes_anthropic_requests_through(serve_kind: Any, llama_server: Path) -> None:
    entry = {
        "model": str(smollm2_gguf()),
        "binary": str(llama_server),
        "port": free_port(),
        "contextLength": 4096,
        "threads": 1,  # much steadier than the default on a busy 2-core box
    }
    s = serve_kind("llama-cpp", entry)
    assert_answered(s)
    client = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=120)
    request: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "hello"}],
    }
    with client.messages.stream(**request) as stream:
        assert stream.get_final_message().usage.output_tokens >= 1
    assert client.messages.count_tokens(model=request["model"], messages=request["messages"]).input_tokens > 0
    # SmolLM2 has no vision projector: llama-server's 500 becomes the client's 400.
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_2X2}}
    with pytest.raises(anthropic.BadRequestError, match="does not accept images"):
        client.messages.create(**{**request, "messages": [{"role": "user", "content": [picture]}]})
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):  # what Claude Code compacts on
        client.messages.create(**{**request, "messages": [{"role": "user", "content": "word " * 5000}]})


PNG_2X2 = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="


def _cmdline(s: Serve) -> list[str]:
    import psutil

    record = s.record()
    assert record and record["pid"]
    return list(psutil.Process(record["pid"]).cmdline())


if sys.platform != "linux" and sys.platform != "darwin":  # pragma: no cover
    pytest.skip("MLX runs on Linux and macOS only", allow_module_level=True)
