"""Rollback by config edit with real processes: RELIABILITY.md items 14–16 and `anyclaude rollback`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from launcher.supervision.ports import free_port
from tests.harness import Serve, alive, anyclaude, fault_command, launch_serve, wait_until


def scripted(port: int, script: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}", "--script", script]
    return {"command": command, "port": port, "healthInterval": 200, "restartDelay": 100, "stopTimeout": 3000}


def answer(s: Serve, timeout: float = 30.0) -> str:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{s.proxy_url}/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=timeout)
    assert reply.status_code == 200, reply.text
    return "".join(block.get("text", "") for block in reply.json()["content"])


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / ".anyclauderc.json"
        self.a, self.b = free_port(), free_port()
        self.data: dict[str, Any] = {
            "port": free_port(),
            "backend": "a",
            "backends": {"a": scripted(self.a, "text"), "b": scripted(self.b, "cached")},
        }
        self.write()

    def write(self, **changes: Any) -> float:
        self.data.update(changes)
        tmp = self.path.with_name(".tmp.json")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)  # as editors do: a whole new file by rename
        return time.monotonic()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Setup, Serve]]:
    config = Setup(tmp_path)
    s = launch_serve(config.path, "a", tmp_path / "marks", config.a)
    try:
        s.wait_state("READY")
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 10)
        yield config, s
    finally:
        s.close()


def test_switching_backend_by_config_edit_keeps_the_proxy(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    assert answer(s) == "Hello world"
    old_pid = s.backend_pid()
    edited = config.write(backend="b")
    wait_until(lambda: "Switched to b" in s.text(), 20, what="the switch")
    switch_time = time.monotonic() - edited
    assert answer(s) == "ok"
    wait_until(lambda: not alive(old_pid), 10, what="the old backend to stop")
    assert s.named("b").state() == "READY"
    print(f"switch time (edit -> new backend serving): {switch_time:.2f} s")


def test_invalid_edit_changes_nothing_and_the_next_valid_one_applies(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    config.path.write_text('{"backend": "b", "backends": {')
    wait_until(lambda: "Config edit not applied" in s.text(), 10)
    assert "invalid JSON" in s.text() and "line 1" in s.text()
    config.path.write_text(json.dumps({**config.data, "backends": {"a": {**config.data["backends"]["a"], "prot": 1}}}))
    wait_until(lambda: "backends.a.prot: unknown key (did you mean 'port'?)" in s.text(), 10)
    assert answer(s) == "Hello world"
    config.write(backend="b")
    wait_until(lambda: "Switched to b" in s.text(), 20)
    assert answer(s) == "ok"


def test_failing_new_backend_leaves_the_old_one_serving(setup: tuple[Setup, Serve], tmp_path: Path) -> None:
    config, s = setup
    broken = {"command": fault_command("--no-listen", "--exit-after", "0.2"), "port": free_port(), "maxRestarts": 0}
    config.write(backend="c", backends={**config.data["backends"], "c": broken})
    wait_until(lambda: "c failed its start; a keeps serving" in s.text(), 20)
    assert answer(s) == "Hello world"
    assert s.state() == "READY"


def test_failing_replacement_on_the_same_port_rolls_back_to_the_old_one(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    entry = {**config.data["backends"]["a"], "command": fault_command("--no-listen", "--exit-after", "0.2")}
    entry["maxRestarts"] = 0
    config.write(backends={**config.data["backends"], "a": entry})
    wait_until(lambda: "rolled back" in s.text(), 30, what="the rollback")
    assert "is serving again" in s.text()
    assert answer(s) == "Hello world"


def test_burst_of_writes_leads_to_at_most_one_restart(tmp_path: Path) -> None:
    marker = tmp_path / "marks"
    port = free_port()
    data: dict[str, Any] = {
        "port": free_port(),
        "backends": {"f": {"command": fault_command("--marker", str(marker)), "port": port, "healthInterval": 200}},
    }
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps({**data, "backend": "f"}))
    s = launch_serve(path, "f", marker, port)
    try:
        s.wait_state("READY")
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 10)
        for i in range(6):  # an editor saving in a hurry: several whole writes within a few ms
            entry = {**data["backends"]["f"], "args": ["--model", f"v{i}"]}
            path.write_text(json.dumps({**data, "backend": "f", "backends": {"f": entry}}))
        # Wait until the last version serves; a burst split into two reloads would have started three by then.
        wait_until(lambda: "v5" in _backend_cmdline(s), 20, what="the last written version to run")
        wait_until(lambda: "Switched to f" in s.text(), 10)
        assert len(s.marks("START")) == 2, s.marks("START")
        assert s.text().count("Switched to f") == 1
    finally:
        s.close()


def test_rollback_command_restores_the_previous_config(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    config.write(backend="b")
    wait_until(lambda: "Switched to b" in s.text(), 20)
    history = anyclaude("config", "history")
    assert history.stdout.count("\n") >= 2, history.stdout
    result = anyclaude("rollback", "--config", str(config.path))
    assert result.returncode == 0, result.stderr
    assert json.loads(config.path.read_text())["backend"] == "a"
    wait_until(lambda: s.text().count("Switched to") >= 2, 20, what="the rollback to be applied")
    assert answer(s) == "Hello world"


def _backend_cmdline(s: Serve) -> str:
    record = s.record()
    if not record or not record.get("pid") or record.get("state") != "READY":
        return ""
    try:
        return " ".join(psutil.Process(record["pid"]).cmdline())
    except psutil.Error:
        return ""
