"""Start and stop a real `python -m adapters.mlx_server` process on a free port, for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, object]:
        body: dict[str, object] = httpx.get(self.url + "/health", timeout=5).json()
        return body


def start_server(
    model: Path,
    log_dir: Path,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    entry: Sequence[str] = ("-m", "adapters.mlx_server"),
    deadline_s: float = 60.0,
) -> ServerProcess:
    """Spawn the server in its own process group and poll /health (recording each status) until 200.

    Raises AssertionError with the server's log if it exits or misses the deadline.
    """
    port = free_port()
    log_path = log_dir / f"mlx-server-{port}.log"
    if "--cache-dir" not in args:  # saved prompt caches stay in the test's folder, never in ~/.anyclaude
        args = [*args, "--cache-dir", str(log_dir / f"cache-{port}")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *entry, "--model", str(model), "--port", str(port), *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess(proc, port, log_path)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} during start:\n{server.log()}")
        try:
            status = httpx.get(server.url + "/health", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        server.statuses.append(status)
        if status == 200:
            return server
        time.sleep(0.02)
    stop_server(server)
    raise AssertionError(f"server not ready within {deadline_s}s:\n{server.log()}")


def stop_server(server: ServerProcess, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, wait, SIGKILL if needed; assert nothing is left (process or port)."""
    pgid = server.proc.pid
    if server.proc.poll() is None:
        os.killpg(pgid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            server.proc.wait(timeout=5)
            raise AssertionError(f"server ignored SIGTERM for {timeout_s}s:\n{server.log()}") from None
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        pass
    else:
        os.killpg(pgid, signal.SIGKILL)
        raise AssertionError("a process of the server's group outlived it")
    assert not port_is_open(server.port), f"port {server.port} still open after stop"


def poll(predicate: object, deadline_s: float, interval_s: float = 0.05) -> bool:
    """Call `predicate()` until it is true or the deadline passes; returns the last result."""
    assert callable(predicate)
    end = time.monotonic() + deadline_s
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(interval_s)
