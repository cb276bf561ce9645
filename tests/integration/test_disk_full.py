"""A full disk under $ANYCLAUDE_HOME (docs/reliability.md 26): serve and the config watcher keep going, each write
that fails is said once (no traceback flood on the terminal), and writing resumes when space returns.

The home lives on a tiny tmpfs filled to the last block; mounting one needs root, so without it the
tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from launcher.supervision.ports import free_port
from tests.harness import Serve, anyclaude, fault_command, full_tmpfs, launch_serve, wait_until


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(home, filler): `home` is $ANYCLAUDE_HOME on a tmpfs whose free space `filler` takes up."""
    disk = tmp_path / "disk"
    with full_tmpfs(disk) as filler:
        filler.unlink()  # room for the home's folders, then the disk is filled again
        home = disk / "home"
        for folder in ("logs", "run", "cache"):
            (home / folder).mkdir(parents=True, mode=0o700)
        home.chmod(0o700)
        monkeypatch.setenv("ANYCLAUDE_HOME", str(home))
        with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
        yield home, filler


def _write(path: Path, data: dict[str, Any], models: dict[str, str]) -> None:
    path.write_text(json.dumps({**data, "models": models}))


def test_full_home_never_stops_serve_or_the_watcher_and_says_so_once(
    full_disk: tuple[Path, Path], tmp_path: Path
) -> None:
    home, filler = full_disk
    with pytest.raises(OSError) as no_room:
        (home / "probe").write_bytes(b"x" * 65536)
    assert no_room.value.errno == errno.ENOSPC
    (home / "probe").unlink(missing_ok=True)

    port = free_port()
    # 2 MB of output at start: every log write fails while the disk is full.
    entry = {"command": fault_command("--spew", "2000000"), "port": port, "healthInterval": 200}
    data: dict[str, Any] = {"port": free_port(), "backend": "fault", "backends": {"fault": entry}}
    config = tmp_path / "conf" / ".anyclauderc.json"
    config.parent.mkdir()
    _write(config, data, {})
    s: Serve = launch_serve(config, "fault", tmp_path / "marks", port)
    try:
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 30, what="serve to keep going after READY")
        health = httpx.get(f"{s.proxy_url}/health", timeout=5)
        assert health.status_code == 200

        # Two edits while the disk is full: both applied, although config history cannot be written.
        _write(config, data, {"claude-a": "m1"})
        wait_until(lambda: s.text().count("Config applied") >= 1, 15, what="the first edit")
        _write(config, data, {"claude-a": "m2"})
        wait_until(lambda: s.text().count("Config applied") >= 2, 15, what="the second edit")
        out = s.text()
        assert "Traceback" not in out, out[-3000:]
        assert out.count("Cannot write config history") == 1, out
        assert out.count("Cannot write the log of fault") == 1, out
        assert "df -h" in out

        # Space returns: the next edit is kept in history, and the logs are written again.
        filler.unlink()
        _write(config, data, {"claude-a": "m3"})
        wait_until(lambda: s.text().count("Config applied") >= 3, 15, what="the third edit")
        wait_until(lambda: list((home / "config-history").glob("*.json")), 10, what="a history entry")
        wait_until(lambda: "works again" in s.text(), 10, what="the recovery to be said")
        assert s.proc.poll() is None
    finally:
        s.close()
    assert s.proc.returncode is not None


def test_a_log_on_a_device_file_is_never_chmodded(tmp_path: Path) -> None:
    """Opening a log that is a symlink to /dev/full must not change the device's mode (we run as root here)."""
    from launcher.supervision.childlog import BackendLog

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    before = os.stat("/dev/full").st_mode
    link = tmp_path / "x.log"
    link.symlink_to("/dev/full")
    try:
        log = BackendLog(link, 4096, 1)
        log.write_text("hello\n")  # fails with ENOSPC: reported, not raised
        log.close()
        assert os.stat("/dev/full").st_mode == before
    finally:
        if os.stat("/dev/full").st_mode != before:  # put the machine's device back as it was
            os.chmod("/dev/full", stat.S_IMODE(before))


def test_what_could_not_be_written_at_start_is_written_once_space_returns(
    full_disk: tuple[Path, Path], tmp_path: Path
) -> None:
    """`status` and `stop` find the backend within seconds of space returning, with no state change needed."""
    home, filler = full_disk
    port = free_port()
    entry = {"command": fault_command(), "port": port, "healthInterval": 200}
    data: dict[str, Any] = {"port": free_port(), "backend": "fault", "backends": {"fault": entry}}
    config = tmp_path / "conf" / ".anyclauderc.json"
    config.parent.mkdir()
    _write(config, data, {})
    s: Serve = launch_serve(config, "fault", tmp_path / "marks", port)
    try:
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 30, what="serve to keep going after READY")
        assert "Cannot write the state file of fault" in s.text(), s.text()
        assert s.record() is None

        filler.unlink()
        record = wait_until(s.record, 5, what="the state file, written again once space returned")
        assert record["state"] == "READY", record
        shown = anyclaude("status")
        assert shown.returncode == 0, shown.stderr
        assert "fault" in shown.stdout and "READY" in shown.stdout, shown.stdout
        wait_until(lambda: "Writing the state file of fault works again" in s.text(), 5, what="the recovery")
        # The backend's first lines, written while the disk was full, are written late rather than lost.
        log = home / "logs" / "fault.log"
        wait_until(lambda: log.exists() and "fault backend pid" in log.read_text(), 5, what="the kept lines")
        assert "the disk was full from" in log.read_text()

        stopped = anyclaude("stop")
        assert stopped.returncode == 0, (stopped.stdout, stopped.stderr)
        assert "Nothing is running" not in stopped.stdout + stopped.stderr
        assert s.wait_exit(30) == 0
        assert "Traceback" not in s.text()
    finally:
        s.close()
