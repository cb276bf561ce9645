"""Claude Code fitted to the model, seen where it counts: in the request the real Claude Code sends."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from launcher.supervision.ports import free_port
from tests.e2e.test_claude_code import run_anyclaude
from tests.harness import launch_serve, wait_until

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code (`claude`) is not on PATH"),
]

TOOLS_TEMPLATE = "{% for t in tools %}{{ t | tojson }}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"
CHAT_ONLY_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def model_folder(tmp_path: Path, template: str, params: int) -> Path:
    """A model folder as far as the launcher reads it: its template and its safetensors header."""
    folder = tmp_path / "Some-Model"
    folder.mkdir()
    (folder / "chat_template.jinja").write_text(template)
    header = json.dumps({"w": {"dtype": "F32", "shape": [params], "data_offsets": [0, 4 * params]}})
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode())
    return folder


def serve_and_ask(model: Path, tmp_path: Path, *claude_args: str) -> dict[str, Any]:
    """Run Claude Code through `anyclaude` on a scripted backend serving `model`; the request it received."""
    port = free_port()
    config = tmp_path / ".anyclauderc.json"
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}"]
    entry = {"command": command, "port": port, "model": str(model)}
    config.write_text(json.dumps({"port": free_port(), "backend": "local", "backends": {"local": entry}}))
    serve = launch_serve(config, "local", tmp_path / "marks", port)
    try:
        serve.wait_state("READY")
        wait_until(lambda: "Serving the Anthropic API" in serve.text(), 10)
        run_anyclaude(config, tmp_path, "-p", "What does notes.txt say?", "--output-format", "json", *claude_args)
        sent: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/_last", timeout=5).json()
        return sent
    finally:
        serve.close()


def tool_names(sent: dict[str, Any]) -> list[str]:
    return sorted(t["function"]["name"] for t in sent.get("tools") or [])


def system_text(sent: dict[str, Any]) -> str:
    return " ".join(str(m["content"]) for m in sent["messages"] if m["role"] == "system")


def test_a_model_that_cannot_call_tools_is_offered_none(tmp_path: Path) -> None:
    model = model_folder(tmp_path, CHAT_ONLY_TEMPLATE, params=1000)

    sent = serve_and_ask(model, tmp_path)

    assert tool_names(sent) == []
    assert "You have no tools" in system_text(sent)


def test_a_small_model_gets_read_edit_bash_and_the_compact_prompt(tmp_path: Path) -> None:
    model = model_folder(tmp_path, TOOLS_TEMPLATE, params=1000)

    sent = serve_and_ask(model, tmp_path)

    assert tool_names(sent) == ["Bash", "Edit", "Read"]
    assert "You are a coding agent in a terminal" in system_text(sent)
    # Each tool's description is its first sentence: Claude Code's ~5 KB of usage rules never reach the model.
    read = next(t["function"] for t in sent["tools"] if t["function"]["name"] == "Read")
    assert read["description"] == "Reads a file from the local filesystem."
    assert len(json.dumps(sent)) < 5_000  # Claude Code's full request is ~77 KB


def test_the_users_tools_and_prompt_win(tmp_path: Path) -> None:
    model = model_folder(tmp_path, TOOLS_TEMPLATE, params=1000)

    sent = serve_and_ask(model, tmp_path, "--tools", "Read", "--system-prompt", "Only read.")

    assert tool_names(sent) == ["Read"]
    assert "Only read." in system_text(sent) and "coding agent in a terminal" not in system_text(sent)
