"""State files: roundtrip, private mode, torn or garbage files ignored, ownership proved by pid + create time."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from launcher.paths import Home
from launcher.supervision.statefile import (
    BackendRecord,
    argv_hash,
    backend_alive,
    launcher_alive,
    list_records,
    process_argv_hash,
    process_create_time,
    proven_process,
    read_record,
    record_path,
    remove_record,
    write_record,
)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "h").ensure()


def dead_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except OSError:
        return 2**22 + 1


def sample(**kw: object) -> BackendRecord:
    fields: dict[str, object] = {
        "name": "mlx",
        "kind": "mlx-lm",
        "state": "READY",
        "reason": "healthy",
        "pid": 4242,
        "create_time": 1700000000.25,
        "port": 8081,
        "argv_hash": argv_hash(["python", "-m", "mlx_lm.server"]),
        "base_url": "http://127.0.0.1:8081",
        "launcher_create_time": 1700000000.0,
        "config_path": "/x/.anyclauderc.json",
        "proxy_url": "http://127.0.0.1:49152",
        "log_path": "/x/logs/mlx.log",
        "restarts": 2,
        "started_at": 1700000001.0,
        "breaker": {"state": "closed", "failures": 0, "retry_after": 0.0},
    }
    fields.update(kw)
    return BackendRecord(**fields)  # type: ignore[arg-type]


def test_roundtrip(home: Home) -> None:
    record = sample()
    write_record(home, record)
    assert read_record(home, "mlx") == record
    path = record_path(home, "mlx")
    assert path == home.run / "mlx.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_stamps_updated_at(home: Home) -> None:
    record = sample(updated_at=0.0)
    write_record(home, record)
    assert record.updated_at > 0.0
    stored = read_record(home, "mlx")
    assert stored is not None
    assert stored.updated_at == record.updated_at


def test_file_is_plain_sorted_json(home: Home) -> None:
    write_record(home, sample())
    data = json.loads(record_path(home, "mlx").read_text())
    assert list(data) == sorted(data)
    assert data["pid"] == 4242
    assert data["launcher_pid"] == os.getpid()


def test_missing_record(home: Home) -> None:
    assert read_record(home, "nope") is None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"name": "mlx", "kind": "ml',
        b"\x00\xff\xfe garbage \x80",
        b"{}",
        b'{"name": "mlx"}',
        b"not json at all",
    ],
    ids=["empty", "torn", "binary", "empty-object", "missing-fields", "text"],
)
def test_torn_or_garbage_file_is_ignored(home: Home, content: bytes) -> None:
    record_path(home, "mlx").write_bytes(content)
    assert read_record(home, "mlx") is None


@pytest.mark.parametrize("content", ["[]", "null", "42", '"mlx"'])
def test_json_that_is_not_an_object_is_ignored(home: Home, content: str) -> None:
    record_path(home, "mlx").write_text(content)
    assert read_record(home, "mlx") is None


def test_unknown_fields_from_other_versions_are_dropped(home: Home) -> None:
    data = json.loads(sample().to_json())
    data["added_in_a_later_version"] = 1
    record_path(home, "mlx").write_text(json.dumps(data))
    assert read_record(home, "mlx") == sample(updated_at=data["updated_at"])


def test_list_and_remove(home: Home) -> None:
    write_record(home, sample(name="b"))
    write_record(home, sample(name="a"))
    record_path(home, "torn").write_text("{")
    assert [r.name for r in list_records(home)] == ["a", "b"]
    remove_record(home, "a")
    remove_record(home, "a")  # twice is fine
    assert [r.name for r in list_records(home)] == ["b"]


def test_list_without_run_folder(tmp_path: Path) -> None:
    assert list_records(Home(tmp_path / "absent")) == []


def test_argv_hash() -> None:
    assert argv_hash(["a", "b"]) == argv_hash(("a", "b"))
    assert argv_hash(["a", "b"]) != argv_hash(["a b"])
    assert argv_hash(["a", "b"]) != argv_hash(["b", "a"])
    assert len(argv_hash(["x"])) == 16


# --- ownership proof -------------------------------------------------------------------------


MY_HASH = process_argv_hash(os.getpid())


def test_this_process_is_proven_by_pid_create_time_and_command_line() -> None:
    created = process_create_time(os.getpid())
    assert created is not None
    proc = proven_process(os.getpid(), created, MY_HASH)
    assert proc is not None
    assert proc.pid == os.getpid()


@pytest.mark.parametrize("offset", [1.0, -1.0, 0.5, 3600.0])
def test_wrong_create_time_means_the_pid_was_reused(offset: float) -> None:
    created = process_create_time(os.getpid())
    assert created is not None
    assert proven_process(os.getpid(), created + offset, MY_HASH) is None


def test_another_command_line_is_not_proven_even_with_the_right_pid_and_create_time() -> None:
    created = process_create_time(os.getpid())
    assert proven_process(os.getpid(), created, argv_hash(["python", "-m", "something", "else"])) is None


def test_dead_pid_is_not_proven() -> None:
    pid = dead_pid()
    assert process_create_time(pid) is None
    assert proven_process(pid, 1700000000.0, MY_HASH) is None


@pytest.mark.parametrize(
    ("pid", "created", "command"),
    [(None, 1.0, MY_HASH), (os.getpid(), None, MY_HASH), (None, None, MY_HASH), (os.getpid(), 1.0, None)],
)
def test_missing_pid_create_time_or_command_is_not_proven(
    pid: int | None, created: float | None, command: str | None
) -> None:
    if created == 1.0 and pid is not None:
        created = process_create_time(os.getpid())
    assert proven_process(pid, created, command) is None


def test_backend_and_launcher_alive() -> None:
    created = process_create_time(os.getpid())
    me = sample(
        pid=os.getpid(),
        create_time=created,
        argv_hash=MY_HASH,
        launcher_pid=os.getpid(),
        launcher_create_time=created,
        launcher_argv_hash=MY_HASH,
    )
    assert backend_alive(me) is not None
    assert launcher_alive(me) is not None
    reused = sample(pid=os.getpid(), create_time=(created or 0.0) - 10, launcher_pid=dead_pid())
    assert backend_alive(reused) is None
    assert launcher_alive(reused) is None


@pytest.mark.parametrize("pid", ["4242", -1, 1.5])
def test_garbage_pid_in_a_state_file_is_not_proven(home: Home, pid: object) -> None:
    data = json.loads(sample().to_json())
    data["pid"] = pid
    record_path(home, "mlx").write_text(json.dumps(data))
    record = read_record(home, "mlx")
    assert record is None or backend_alive(record) is None
