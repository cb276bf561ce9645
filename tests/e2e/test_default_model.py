"""A machine with no config file: `anyclaude serve` fetches the built-in SmolLM2 and serves it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from launcher.supervision.ports import free_port
from tests.harness import wait_until


@pytest.mark.slow
def test_serve_without_any_config_runs_the_built_in_model(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    cwd.mkdir()
    port = free_port()
    output = tmp_path / "serve.out"
    env = {**os.environ, "HOME": str(home), "ANYCLAUDE_PORT": str(port)}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "serve"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: "Serving the Anthropic API" in output.read_text() or proc.poll() is not None, 240)
        text = output.read_text()
        assert "using the built-in SmolLM2-135M-Instruct" in text, text
        model = Path(os.environ["ANYCLAUDE_HOME"]) / "models" / "SmolLM2-135M-Instruct"
        assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
        body = {"model": "claude-sonnet-4-6", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["output_tokens"] >= 1
        # `doctor` passes on the home this first run made: the model folder anyclaude created is private too.
        doctor = subprocess.run(
            [sys.executable, "-m", "launcher", "doctor", "--json"], cwd=cwd, env=env, capture_output=True, text=True
        )
        found = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert found["home.dirs"]["status"] == "ok", found["home.dirs"]
        assert found["home.files"]["status"] == "ok", found["home.files"]
        # ... and it says what the demo model cannot do, without a config file too.
        assert (
            found["backend.mlx.tools"]["status"] == "warn"
            and "drops tool definitions" in found["backend.mlx.tools"]["finding"]
        )
        assert "cannot call tools" in text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
