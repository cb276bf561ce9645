"""`anyclaude doctor --deep` over real processes: the scripted backend behind a real `anyclaude serve`.

Driven through `python -m launcher.doctor --deep --json` for the exit-code contract. The scripted
backend picks its reply from its `--script` default (the doctor's prompts carry no markers): `tools`
answers every request with tool calls, `cached` with text and cached prompt tokens, so no one
backend makes all three request checks pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from launcher.supervision.ports import free_port
from tests.conftest import tagged_processes
from tests.harness import ROOT, fault_command, start_serve, write_config

SECRET = "sk-deep-doctor-secret-0123456789"
Report = dict[str, dict[str, Any]]


def scripted(script: str) -> dict[str, Any]:
    """A `command` backend entry running the scripted OpenAI-compatible test backend."""
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}", "--script", script]
    return {"command": command, "healthInterval": 200, "restartDelay": 100}


def deep_doctor(config: Path, mode: str) -> tuple[int, Report, str]:
    """`python -m launcher.doctor --deep --json` as a user runs it: exit code, checks by name, raw output."""
    argv = [sys.executable, "-m", "launcher.doctor", "--deep", "--json", "--config", str(config), "--mode", mode]
    done = subprocess.run(argv, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is (done.returncode == 0)
    checks = {row["name"]: row for row in report["checks"]}
    assert len(checks) == len(report["checks"]), "check names must be distinct"
    return done.returncode, checks, done.stdout


def test_deep_doctor_reuses_the_running_proxy_and_sends_its_api_key(tmp_path: Path) -> None:
    s = start_serve(tmp_path, entry=scripted("tools"), name="local", top={"apiKey": SECRET})
    try:
        s.wait_state("READY")
        code, checks, raw = deep_doctor(tmp_path / ".anyclauderc.json", "local")
        assert s.proc.poll() is None, "the doctor must leave a serve it did not start running"
        # stream 1 + tool call and its result 2 + two turns 2: all through the running proxy.
        assert httpx.get(f"http://127.0.0.1:{s.port}/_stats").json()["requests"] == 5
    finally:
        s.close()
    assert code == 0
    assert checks["deep.proxy"]["status"] == "ok"
    assert checks["deep.proxy"]["finding"] == f"using the running proxy at {s.proxy_url} (READY)"
    assert checks["deep.stream"]["status"] == "ok"
    assert "first token after" in checks["deep.stream"]["finding"]
    assert checks["deep.tools"]["status"] == "ok"
    assert "the reply to its result is a well-formed message" in checks["deep.tools"]["finding"]
    assert checks["deep.cache"]["status"] == "warn"
    assert checks["deep.cache"]["finding"] == "the backend reports no cached tokens"
    assert SECRET not in raw


def test_deep_doctor_starts_a_proxy_for_the_check_and_stops_it(tmp_path: Path, no_leaked_processes: str) -> None:
    entry = {**scripted("cached"), "port": free_port()}
    config = write_config(tmp_path / ".anyclauderc.json", {"local": entry}, backend="local", port=free_port())
    code, checks, _ = deep_doctor(config, "local")
    assert code == 0
    assert checks["deep.proxy"]["status"] == "ok"
    assert checks["deep.proxy"]["finding"].startswith("started one for the check in ")
    assert checks["deep.stream"]["status"] == "ok"
    assert checks["deep.tools"]["status"] == "warn", "a reply without a tool call is never a pass"
    assert checks["deep.tools"]["finding"] == "the model did not call the tool (its chat template may not render tools)"
    assert checks["deep.cache"]["status"] == "ok"
    assert checks["deep.cache"]["finding"] == "turn 2 read 900 of 1000 prompt tokens from the cache"
    assert not (Path(os.environ["ANYCLAUDE_HOME"]) / "run" / "local.json").exists()
    assert tagged_processes(no_leaked_processes) == [], "the serve started for the check must be stopped"


@pytest.mark.parametrize(
    ("max_restarts", "expected"),
    [
        # It keeps restarting: the doctor gives up at startupTimeout + 10 s and quotes the serve's output.
        (100, r"the serve started for the check was not ready within 12 s \(\w+\): .*fault backend pid"),
        # It gives up at once: FATAL (or the serve's exit, whichever the doctor sees first) ends the wait.
        (0, r"the serve started for the check (went FATAL: gave up after 1 failed starts|exited with code 1)"),
    ],
    ids=["deadline", "fatal"],
)
def test_deep_doctor_fails_when_the_backend_never_gets_ready(
    tmp_path: Path, no_leaked_processes: str, max_restarts: int, expected: str
) -> None:
    entry = {
        "command": fault_command("--no-listen"),
        "port": free_port(),
        "startupTimeout": 2000,
        "restartDelay": 100,
        "maxRestarts": max_restarts,
    }
    config = write_config(tmp_path / ".anyclauderc.json", {"stuck": entry}, backend="stuck", port=free_port())
    code, checks, _ = deep_doctor(config, "stuck")
    assert code == 1
    proxy = checks["deep.proxy"]
    assert proxy["status"] == "fail"
    assert re.match(expected, proxy["finding"]), proxy["finding"]
    assert "anyclaude logs stuck" in proxy["fix"]
    assert not any(name.startswith("deep.") and name != "deep.proxy" for name in checks)
    assert not (Path(os.environ["ANYCLAUDE_HOME"]) / "run" / "stuck.json").exists()
    assert tagged_processes(no_leaked_processes) == []


def test_deep_doctor_without_a_config_file_checks_the_running_default(tmp_path: Path) -> None:
    """No config file anywhere: the built-in default's mode (`mlx`) is checked, through the serve running it."""
    s = start_serve(tmp_path, entry=scripted("cached"), name="mlx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HOME": str(elsewhere)}  # no ~/.anyclauderc.json either
    env.pop("ANYCLAUDE_CONFIG", None)
    try:
        s.wait_state("READY")
        argv = [sys.executable, "-m", "launcher.doctor", "--deep", "--json"]
        done = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
        checks = {row["name"]: row for row in json.loads(done.stdout)["checks"]}
        assert s.proc.poll() is None
    finally:
        s.close()
    assert checks["deep.proxy"]["status"] == "ok", checks["deep.proxy"]
    assert checks["deep.proxy"]["finding"] == f"using the running proxy at {s.proxy_url} (READY)"
    assert checks["deep.stream"]["status"] == "ok", checks["deep.stream"]
