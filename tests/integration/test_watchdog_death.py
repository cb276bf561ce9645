"""A watchdog killed on its own (SIGKILL, the OOM killer) while its launcher runs: the launcher stops the
tree the watchdog was guarding (by pid + create time, never by name), starts the backend afresh on its
port, and a Ctrl-C of `serve` afterwards leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psutil

from launcher.supervision.ports import free_port
from tests.harness import alive, launch_serve, wait_until


def test_a_killed_watchdog_leaves_no_backend_tree_running(tmp_path: Path) -> None:
    marker = tmp_path / "tree.marks"
    script = tmp_path / "server.sh"
    # A shell that runs the server without `exec`, a forked worker and a child that called setsid (both
    # ignore SIGTERM): the tree a watchdog guards, as in test_killed_launcher_leaves_nothing_its_backend_started.
    script.write_text(
        f'"{sys.executable}" -m tests.fault_backend --port "$PORT" --marker "{marker}" '
        "--grandchild --escaped-grandchild\n"
    )
    port = free_port()
    entry = {"serverScript": str(script), "port": port, "healthInterval": 200, "stopTimeout": 1000}
    entry |= {"restartDelay": 100}
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "sh", "backends": {"sh": entry}}))
    s = launch_serve(config, "sh", marker, port)
    try:
        s.wait_state("READY")
        wait_until(lambda: len(s.marks("GRANDCHILD")) >= 2, 10, what="both grandchildren")
        watchdog = psutil.Process(s.backend_pid())
        old_tree = [watchdog, *watchdog.children(recursive=True)]
        assert len(old_tree) >= 5, [p.cmdline() for p in old_tree]  # watchdog, shell, server, worker, escaped
        # The launcher records the tree it guards (pid and create time each) before anything can go wrong.
        recorded = wait_until(
            lambda: len((s.record() or {}).get("tree", [])) >= 4 and s.record(), 10, what="the tree in the state file"
        )
        assert {pid for pid, _ in recorded["tree"]} == {p.pid for p in old_tree[1:]}, recorded["tree"]

        # Named before the kill: a process that is already gone has no name to read.
        names = {proc.pid: proc.name() for proc in old_tree}
        os.kill(watchdog.pid, signal.SIGKILL)
        for pid, name in names.items():
            wait_until(lambda pid=pid: not alive(pid), 15, what=f"{pid} {name} to be gone")
        # The backend runs again, a new tree on the same port.
        wait_until(
            lambda: s.record() and s.record()["pid"] != watchdog.pid and s.state() == "READY",
            20,
            what="a fresh backend",
        )
        wait_until(lambda: len(s.marks("GRANDCHILD")) >= 4, 10, what="the new grandchildren")
        new_pids = [pid for _, pid, _ in s.marks("GRANDCHILD")[2:]]
        new_watchdog = s.backend_pid()
        assert "Traceback" not in s.text()

        s.interrupt()
        assert s.wait_exit(timeout=20) == 0, s.text()[-3000:]
        for pid in (new_watchdog, *new_pids):
            wait_until(lambda pid=pid: not alive(pid), 10, what=f"pid {pid} to be gone")
    finally:
        s.close()


def test_a_watchdog_killed_while_its_backend_starts_leaves_nothing_either(tmp_path: Path) -> None:
    """A model that takes minutes to load: the tree is recorded while it starts, not only once it is READY."""
    marker = tmp_path / "tree.marks"
    port = free_port()
    command = [sys.executable, "-m", "tests.fault_backend", "--port", "{port}", "--marker", str(marker)]
    entry = {
        "command": [*command, "--grandchild", "--escaped-grandchild", "--ready-after", "600"],
        "port": port,
        "stopTimeout": 1000,
        "restartDelay": 100,
        "startupTimeout": 600000,
    }
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "slow", "backends": {"slow": entry}}))
    s = launch_serve(config, "slow", marker, port)
    try:
        recorded = wait_until(
            lambda: len((s.record() or {}).get("tree", [])) >= 3 and s.record(),
            20,
            what="the tree in the state file while starting",
        )
        assert recorded["state"] == "STARTING", recorded
        pids = [pid for pid, _ in recorded["tree"]]
        os.kill(recorded["pid"], signal.SIGKILL)
        for pid in pids:
            wait_until(lambda pid=pid: not alive(pid), 15, what=f"pid {pid} to be gone")
        s.interrupt()
        s.wait_exit(timeout=20)  # 1: the backend never started, and says so
        assert "Traceback" not in s.text(), s.text()[-3000:]
    finally:
        s.close()
