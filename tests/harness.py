"""Helpers for integration tests: run `anyclaude` as a real process, poll with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from launcher.supervision.ports import free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def fault_command(*flags: str) -> list[str]:
    """A `command` argv running the fault-injecting test backend on `{port}`."""
    return [sys.executable, "-m", "tests.fault_backend", "--port", "{port}", *flags]


def scripted_entry(*flags: str) -> dict[str, Any]:
    """A backend entry running the scripted OpenAI-compatible test backend on `{port}`."""
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}", *flags]
    return {"command": command, "healthInterval": 200, "restartDelay": 100}


def write_config(path: Path, backends: dict[str, dict[str, Any]], **top: Any) -> Path:
    path.write_text(json.dumps({"backends": backends, **top}, indent=2))
    return path


def anyclaude(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `anyclaude` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Serve:
    """A running `anyclaude serve` process, its output file and its home folder."""

    proc: subprocess.Popen[bytes]
    output: Path
    home: Path
    name: str
    marker: Path
    port: int
    proxy_port: int = 0
    stopped: bool = field(default=False)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def record(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.home / "run" / f"{self.name}.json").read_text())
        except (OSError, ValueError):
            return None
        # A record left by an earlier launcher is not this one's.
        return data if data.get("launcher_pid") == self.proc.pid else None

    def state(self) -> str | None:
        record = self.record()
        return record["state"] if record else None

    def named(self, name: str) -> Serve:
        """The same serve, looking at backend `name`'s state file (after a switch)."""
        return Serve(self.proc, self.output, self.home, name, self.marker, self.port, self.proxy_port, self.stopped)

    def wait_state(self, state: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for the backend's `state`; fail at once, with serve's output, when serve has exited meanwhile."""

        def reached() -> bool:
            if self.state() == state:
                return True
            if self.proc.poll() is not None:  # it gave up (or crashed): waiting longer cannot help
                raise AssertionError(
                    f"anyclaude serve exited ({self.proc.returncode}) while waiting for state {state}:\n"
                    + self.text()[-3000:]
                )
            return False

        wait_until(reached, timeout, what=f"state {state} (now {self.state()})")
        record = self.record()
        assert record is not None
        return record

    def marks(self, kind: str | None = None) -> list[tuple[str, int, float]]:
        if not self.marker.exists():
            return []
        rows = [line.split() for line in self.marker.read_text().splitlines() if line.strip()]
        parsed = [(r[0], int(r[1]), float(r[2]) if len(r) > 2 else 0.0) for r in rows]
        return [m for m in parsed if kind is None or m[0] == kind]

    def backend_pid(self) -> int:
        record = self.record()
        assert record and record["pid"], f"no backend pid in {record}"
        return int(record["pid"])

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait_exit(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self.stopped = True
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def launch_serve(config: Path, name: str, marker: Path, port: int, env: dict[str, str] | None = None) -> Serve:
    """Start `anyclaude serve --config CONFIG`; `name` is the backend whose state the Serve reads."""
    data = json.loads(config.read_text())
    output = config.parent / "serve.out"
    home = Path((env or {}).get("ANYCLAUDE_HOME") or os.environ["ANYCLAUDE_HOME"])
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    return Serve(proc, output, home, name, marker, port, proxy_port=int(data.get("port", 0)))


def start_serve(
    tmp_path: Path,
    flags: tuple[str, ...] = (),
    entry: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    name: str = "fault",
    port: int | None = None,
    top: dict[str, Any] | None = None,
) -> Serve:
    """Start `anyclaude serve` on a fault backend; `flags` go to the backend, `entry` overrides config keys."""
    port = port or free_port()
    marker = tmp_path / f"{name}.marks"
    backend = {
        "command": fault_command(*flags, "--marker", str(marker)),
        "port": port,
        "healthInterval": 200,
        "restartDelay": 100,
        "stopTimeout": 3000,
        **(entry or {}),
    }
    top = {"port": free_port(), **(top or {})}  # the proxy's port
    config = write_config(tmp_path / ".anyclauderc.json", {name: backend}, backend=name, **top)
    return launch_serve(config, name, marker, port, env)


@contextlib.contextmanager
def serves(start: Callable[..., Serve]) -> Iterator[Callable[..., Serve]]:
    """`start`, remembering every `anyclaude serve` it starts; all of them are closed at the end (a fixture's body)."""
    started: list[Serve] = []

    def tracked(*args: Any, **kwargs: Any) -> Serve:
        instance = start(*args, **kwargs)
        started.append(instance)
        return instance

    try:
        yield tracked
    finally:
        for instance in started:
            instance.close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def full_tmpfs(folder: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` and filled to its last block; yields the file that fills it.

    Mounting needs root: without it the calling test is skipped with the reason. Unmounted on exit.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        filler = folder / "filler"
        with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
