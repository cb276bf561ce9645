"""The terminal belongs to Claude Code (issue 15.4): while `anyclaude` runs it in the foreground, anyclaude
prints nothing; config edits made meanwhile are shown by `anyclaude status` and in the launcher's log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from launcher.supervision.ports import free_port
from tests.harness import ROOT, anyclaude, fault_command, wait_until

FAKE_CLAUDE = """#!/bin/sh
echo CLAUDE-START
while [ ! -f "$FAKE_CLAUDE_RELEASE" ]; do sleep 0.05; done
echo CLAUDE-END
"""


def test_config_edits_while_claude_code_runs_go_to_status_and_the_log_not_the_terminal(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text(FAKE_CLAUDE)
    fake.chmod(0o755)
    release = tmp_path / "release"
    entry = {"command": fault_command(), "port": free_port(), "healthInterval": 200}
    data: dict[str, Any] = {"port": free_port(), "backend": "f", "backends": {"f": entry}}
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps(data))
    output = tmp_path / "terminal.out"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_CLAUDE_RELEASE": str(release)}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--config", str(config), "--", "-p", "hi"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
    try:
        wait_until(lambda: "CLAUDE-START" in output.read_text(), 30, what="Claude Code to start")

        def status() -> str:
            return anyclaude("status").stdout

        config.write_text(json.dumps({**data, "models": {"claude-x": "m"}}))
        wait_until(lambda: "Config applied" in status(), 15, what="the applied edit in status")
        config.write_text('{"backend": "f", "backends": {')
        wait_until(lambda: "Config edit not applied" in status(), 15, what="the rejected edit in status")
        as_json = json.loads(anyclaude("status", "--json").stdout)["backends"][0]
        messages = [event["message"] for event in as_json["config_events"]]
        assert any("Config applied" in m for m in messages) and any("invalid JSON" in m for m in messages)

        # A client sending garbage makes the HTTP server log a warning: into the log, not onto the screen.
        with socket.create_connection(("127.0.0.1", data["port"]), timeout=10) as conn:
            conn.sendall(b"GARBAGE\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.1 400")
        log_file = Path(os.environ["ANYCLAUDE_HOME"]) / "logs" / "anyclaude.log"
        wait_until(lambda: "Invalid HTTP request" in log_file.read_text(), 10, what="the warning in the log")

        release.touch()
        assert proc.wait(30) == 0
        text = output.read_text()
        during = text.split("CLAUDE-START", 1)[1].split("CLAUDE-END", 1)[0]
        assert during.strip() == "", f"anyclaude wrote over Claude Code's screen: {during!r}"
        log = (Path(os.environ["ANYCLAUDE_HOME"]) / "logs" / "anyclaude.log").read_text()
        assert "Config applied" in log and "Config edit not applied" in log
    finally:
        release.touch()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
