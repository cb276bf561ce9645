"""The real Claude Code under `anyclaude -- -p` while a slow backend reads the prompt: progress on stderr, a
clean stdout, and exit 130 after a Ctrl-C; interactive, the same progress in Claude Code's status line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from launcher.supervision.ports import free_port
from tests.conftest import TAG
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


class Tmux:
    """A private tmux server (its own socket) running one command in a 140x40 pane, in `cwd`."""

    def __init__(self, tmp_path: Path, cwd: Path, command: list[str]) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self._tmux("new-session", "-d", "-x", "140", "-y", "40", "-c", str(cwd), shlex.join(command))
        self.pane_pid = int(self._tmux("display-message", "-p", "#{pane_pid}").strip())

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def close(self) -> None:
        """End the server; the pane's processes get SIGHUP and must all be gone."""
        family: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            pane = psutil.Process(self.pane_pid)
            family = [pane, *pane.children(recursive=True)]
        with contextlib.suppress(subprocess.CalledProcessError):
            self._tmux("kill-server")
        psutil.wait_procs(family, timeout=30)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_interactive_status_line_shows_prefill_progress_then_the_model(tmp_path: Path) -> None:
    from launcher.claude import PLACEHOLDER_API_KEY, complete_onboarding

    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    complete_onboarding(home / ".claude.json", project, PLACEHOLDER_API_KEY)  # no first-run screens
    config = slow_prefill_config(project, 3.0)
    entry = json.loads(config.read_text())
    entry["backends"]["local"]["model"] = "demo-model"
    config.write_text(json.dumps(entry))
    passed = {name: os.environ[name] for name in ("PATH", "ANYCLAUDE_HOME", TAG) if name in os.environ}
    env = [f"{name}={value}" for name, value in {**passed, "HOME": str(home), "PYTHONPATH": str(ROOT)}.items()]
    command = ["env", *env, sys.executable, "-m", "launcher", "--config", str(config)]
    tmux = Tmux(tmp_path, project, command)
    try:
        wait_until(lambda: "demo-model" in tmux.screen().split("❯")[-1], 120, what="the status line")
        tmux.keys("say hello")
        tmux.keys("Enter")
        progress = wait_until(
            lambda: re.search(r"reading the prompt: [\d,]+ / 1,000 tokens \(\d+ %.*\)", tmux.screen()), 60
        )
        assert progress is not None
        wait_until(lambda: "Hello world" in tmux.screen(), 60, what="the answer")
        # Once the answer came, the status line names the model again.
        wait_until(lambda: "reading the prompt" not in tmux.screen(), 10, what="the progress to go")
        assert "demo-model" in tmux.screen().split("Hello world")[-1]
    finally:
        tmux.close()
