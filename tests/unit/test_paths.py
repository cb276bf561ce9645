"""The private home folder: 0700 folders, 0600 files written atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from launcher.paths import DIR_MODE, FILE_MODE, Home, private_dir, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_modes_are_private() -> None:
    assert (DIR_MODE, FILE_MODE) == (0o700, 0o600)


def test_from_env_uses_anyclaude_home(tmp_path: Path) -> None:
    home = Home.from_env({"ANYCLAUDE_HOME": str(tmp_path / "h")})
    assert home.root == tmp_path / "h"
    assert (home.logs, home.run, home.cache, home.models) == tuple(
        tmp_path / "h" / p for p in ("logs", "run", "cache", "models")
    )


def test_from_env_defaults_to_dot_anyclaude_in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Home.from_env({}).root == tmp_path / ".anyclaude"
    assert Home.from_env({"ANYCLAUDE_HOME": ""}).root == tmp_path / ".anyclaude"


def test_from_env_makes_relative_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Home.from_env({"ANYCLAUDE_HOME": "rel"}).root == tmp_path / "rel"


def test_ensure_creates_private_folders(tmp_path: Path) -> None:
    home = Home(tmp_path / "deep" / "h").ensure()
    for folder in (home.root, home.logs, home.run, home.cache):
        assert folder.is_dir()
        assert mode(folder) == 0o700, folder


def test_ensure_tightens_existing_open_folders(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    for folder in (home.root, home.logs):
        folder.mkdir(parents=True)
        folder.chmod(0o755)
    assert mode(home.root) == 0o755
    home.ensure()
    assert mode(home.root) == 0o700
    assert mode(home.logs) == 0o700


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    home = Home(tmp_path / "h").ensure()
    (home.run / "keep.json").write_text("{}")
    assert home.ensure() == home
    assert (home.run / "keep.json").read_text() == "{}"


def test_private_dir_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert mode(private_dir(tmp_path / "p")) == 0o700
    finally:
        os.umask(old)


def test_write_private_writes_0600(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_private(target, '{"ok": true}\n')
    assert target.read_text(encoding="utf-8") == '{"ok": true}\n'
    assert mode(target) == 0o600


def test_write_private_replaces_and_tightens(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"
    assert mode(target) == 0o600


def test_write_private_replaces_by_rename(tmp_path: Path) -> None:
    # A reader holding the old file keeps seeing whole old content: the new data is a new inode.
    target = tmp_path / "state.json"
    target.write_text("old content")
    with target.open(encoding="utf-8") as reader:
        write_private(target, "new content")
        assert reader.read() == "old content"
    assert target.read_text(encoding="utf-8") == "new content"


def test_write_private_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_private(target, "good")
    with pytest.raises(UnicodeEncodeError):
        write_private(target, "half \ud800 written")
    assert target.read_text(encoding="utf-8") == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_private_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "f") == 0o600
