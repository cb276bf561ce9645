"""The real Claude Code under `anyclaude -- -p` while a slow backend reads the prompt: progress on stderr, a
clean stdout, and exit 130 after a Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from launcher.supervision.ports import free_port
from tests.harness import ROOT, wait_until

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code (`claude`) is not on PATH"),
]

PROGRESS = "reading the prompt: "


def slow_prefill_config(tmp_path: Path, delay: float) -> Path:
    """A scripted backend that reports prefill progress every 0.1 s for 3 x `delay` seconds per request."""
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}"]
    command += ["--script", "prefill_progress", "--delay", str(delay)]
    config = {"port": free_port(), "backend": "local", "backends": {"local": {"command": command, "port": free_port()}}}
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps(config))
    return path


class Run:
    """`anyclaude -- -p …` in its own process group, stderr read as it comes."""

    def __init__(self, config: Path, home: Path, *claude_args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--config", str(config), "--", *claude_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, "HOME": str(home)},
            start_new_session=True,
        )
        self.stderr: list[str] = []
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.stderr.append(line)

    def err(self) -> str:
        return "".join(self.stderr)

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            stdout, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"anyclaude did not finish within {timeout} s\n{self.err()}")
        self._reader.join(5)
        return self.proc.returncode, stdout

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


def test_headless_run_shows_prefill_progress_on_stderr_and_keeps_stdout_clean(tmp_path: Path) -> None:
    run = Run(slow_prefill_config(tmp_path, 2.0), tmp_path, "-p", "say hello", "--output-format", "json")
    try:
        code, stdout = run.finish(300)
    finally:
        run.kill()
    assert code == 0, f"exit {code}\n{stdout}\n{run.err()}"
    result = json.loads(stdout)  # the whole stdout is Claude Code's JSON, nothing of ours in it
    assert result["result"] == "Hello world"
    shown = [line for line in run.err().splitlines() if line.startswith(PROGRESS)]
    assert shown, run.err()
    assert all(" / 1,000 tokens (9" in line for line in shown), shown  # 900-959 of the scripted 1,000
    assert any("s left)" in line for line in shown), shown


def test_ctrl_c_during_a_headless_request_exits_130(tmp_path: Path) -> None:
    run = Run(slow_prefill_config(tmp_path, 20.0), tmp_path, "-p", "say hello", "--output-format", "json")
    try:
        wait_until(lambda: PROGRESS in run.err(), 120, what="a progress line")  # the request is being read
        os.killpg(run.proc.pid, signal.SIGINT)  # what a Ctrl-C in the terminal sends
        code, stdout = run.finish(60)
    finally:
        run.kill()
    assert code == 130, f"exit {code}\n{stdout}\n{run.err()}"
