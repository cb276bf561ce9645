"""The real Claude Code CLI through anyclaude: `anyclaude --mode X -- -p "…" --output-format json`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from launcher.supervision.ports import free_port
from tests.harness import ROOT, launch_serve, wait_until

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code (`claude`) is not on PATH"),
]


def run_anyclaude(
    config: Path, home: Path, *claude_args: str, timeout: float = 300, check: bool = True
) -> dict[str, Any]:
    """Run the main command with a fresh HOME for Claude Code; return its JSON result (`check`: exit 0 too)."""
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--config", str(config), "--", *claude_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # on a timeout the whole group goes: anyclaude, claude and the backend
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"anyclaude did not finish within {timeout} s\n{stdout}\n{stderr}")
    assert proc.returncode == 0 or not check, f"exit {proc.returncode}\n{stdout}\n{stderr}"
    assert "PyTorch" not in stderr, stderr  # nothing but Claude Code may write to its terminal
    data: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return data


def scripted_config(tmp_path: Path, backend_port: int, **entry: Any) -> Path:
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}"]
    config = {
        "port": free_port(),
        "backend": "local",
        "backends": {"local": {"command": command, "port": backend_port, **entry}},
    }
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps(config))
    return path


def test_claude_code_answers_with_exactly_what_the_backend_produced(tmp_path: Path) -> None:
    config = scripted_config(tmp_path, free_port())
    result = run_anyclaude(config, tmp_path, "-p", "say hello", "--output-format", "json")
    assert result["is_error"] is False
    assert result["result"] == "Hello world"  # the scripted backend's text, nothing added or lost


def test_claude_code_names_the_model_that_answers(tmp_path: Path) -> None:
    config = scripted_config(tmp_path, free_port(), model="SmolLM2-135M-Instruct", contextLength=65536)
    result = run_anyclaude(config, tmp_path, "-p", "say hello", "--output-format", "json")
    assert result["result"] == "Hello world"  # an id the proxy does not map still reaches the backend
    # What Claude Code shows (banner, /status, this report) is the local model, not "Opus ... (1M context)".
    assert list(result["modelUsage"]) == ["SmolLM2-135M-Instruct"], result["modelUsage"]


def test_claude_code_uses_a_running_serve_and_leaves_it_running(tmp_path: Path) -> None:
    backend_port = free_port()
    config = scripted_config(tmp_path, backend_port)
    serve = launch_serve(config, "local", tmp_path / "marks", backend_port)
    try:
        serve.wait_state("READY")
        wait_until(lambda: "Serving the Anthropic API" in serve.text(), 10)
        result = run_anyclaude(config, tmp_path, "-p", "say hello", "--output-format", "json")
        assert result["result"] == "Hello world"
        assert serve.proc.poll() is None, "the serve must keep running after Claude Code exits"
        sent = httpx.get(f"http://127.0.0.1:{backend_port}/_last", timeout=5).json()
        text = json.dumps(sent)
        assert "x-anthropic-billing-header" not in text, "the per-conversation billing line must be stripped"
        assert len(sent["tools"]) >= 10, "Claude Code's tools reach the backend as OpenAI tools"
        assert sent["stream"] is True
    finally:
        serve.close()


@pytest.mark.slow
def test_claude_code_on_smollm2_through_our_mlx_server(tmp_path: Path) -> None:
    """The whole chain on a real model: Claude Code -> proxy -> our MLX server -> SmolLM2, and back.

    Measured: under Claude Code's full request (~1.6-3.7k tokens of prompt and reminders) SmolLM2-135M
    rambles for 800-2,000 tokens, minutes on a CPU. `--bare`, no skills, no tools and a one-line system
    prompt bring the prompt to ~135 tokens; greedy decoding then answers briefly and stops on its own.
    """
    from tests.smollm2 import smollm2_dir

    model = smollm2_dir()
    entry: dict[str, Any] = {
        "type": "mlx-server",
        "port": free_port(),
        "model": str(model),
        "contextLength": 8192,
        "temperature": 0.0,
    }
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "mlx", "backends": {"mlx": entry}}))
    result = run_anyclaude(
        config,
        tmp_path,
        "-p",
        "What is the capital of France?",
        "--bare",
        "--disable-slash-commands",
        "--tools",
        "",
        "--system-prompt",
        "You are a geography assistant. Answer with one word.",
        "--output-format",
        "json",
    )
    assert result["is_error"] is False, result
    assert result["stop_reason"] == "end_turn"
    assert "paris" in result["result"].lower(), result["result"]
    # What Claude Code reports is what the server generated, token for token.
    server_log = (Path(os.environ["ANYCLAUDE_HOME"]) / "logs" / "mlx.log").read_text()
    generated = [int(n) for n in re.findall(r"generated_tokens=(\d+)", server_log)]
    assert generated and result["usage"]["output_tokens"] == generated[-1]


@pytest.mark.slow
def test_claude_code_on_smollm2_through_the_official_mlx_lm_server(tmp_path: Path) -> None:
    """Claude Code's full request (tools, system prompt: ~75 KB, ~21k tokens by bytes / 3.5) reaches an 8k model.

    The prompt is counted with the model folder's tokenizer (SmolLM2's template leaves the tools out: a few
    thousand tokens), not refused on an estimate from the body's bytes.
    """
    from tests.smollm2 import smollm2_dir

    entry: dict[str, Any] = {
        "type": "mlx-lm",
        "port": free_port(),
        "model": str(smollm2_dir()),
        "maxOutputTokens": 16,  # SmolLM2 under Claude Code's whole prompt rambles; a few tokens prove the chain
        "startupTimeout": 120000,
        # Claude Code's own request, all tools and its system prompt: not the lean one a small model gets.
        "claude": {"tools": "all", "systemPrompt": "default", "smallModel": False},
    }
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "mlx-lm", "backends": {"mlx-lm": entry}}))
    result = run_anyclaude(config, tmp_path, "-p", "say hello in French", "--output-format", "json", check=False)
    assert "too long" not in result["result"].lower(), result["result"]
    # The model answered: to the end, or to the cap (which Claude Code's print mode reports as an error of its own).
    assert result["is_error"] is False or "output token maximum" in result["result"], result
    assert result["usage"]["output_tokens"] > 0 and result["usage"]["input_tokens"] > 1000, result
