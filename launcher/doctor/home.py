"""Doctor checks of `$ANYCLAUDE_HOME`: private modes (0700 folders, 0600 files) and free disk space."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import stat
from pathlib import Path

from adapters.base import Check, CheckStatus
from launcher.paths import Home

MIN_FREE_BYTES = 2**30
# Enough for logs, state files and a cache; a home with more entries is checked this far only.
MAX_ENTRIES = 20_000
SHOWN = 3


def home_checks(home: Home, hf_cache: Path | None = None) -> list[Check]:
    root = home.root
    if not root.exists():
        created = f"{root} does not exist yet (anyclaude creates it, 0700, on first run)"
        return [Check("home.dirs", CheckStatus.OK, created), *disk_checks(root, hf_cache)]
    loose_dirs, loose_files = loose_entries(root)
    checks = [dirs_check(root, loose_dirs), files_check(root, loose_files), request_log_check(home)]
    return [*checks, *disk_checks(root, hf_cache)]


def request_log_check(home: Home) -> Check:
    """Where the request log lives, how big it is and how many requests it holds."""
    from launcher.observe import store

    path = store.log_path(home)
    if not path.exists():
        return Check("home.request-log", CheckStatus.OK, f"{path}: no request yet (written from the first one on)")
    try:
        with store.reader(path) as conn:
            count = store.count(conn) if conn is not None else 0
    except sqlite3.Error as exc:
        fix = f"Move it aside (mv {shlex.quote(str(path))} {shlex.quote(str(path))}.bad); a new one is started."
        return Check("home.request-log", CheckStatus.WARN, f"{path} cannot be read ({exc})", fix)
    size = store.disk_size(path)
    shown = f"{size / 1024:.0f} KB" if size < 2**20 else f"{size / 2**20:.1f} MB"
    return Check("home.request-log", CheckStatus.OK, f"{path}: {shown}, {count} requests")


def loose_entries(root: Path) -> tuple[list[Path], list[Path]]:
    """Folders and files under `root` (root included) that group or others may read, write or enter."""
    dirs: list[Path] = []
    files: list[Path] = []
    pending = [root]
    seen = 0
    while pending and seen < MAX_ENTRIES:
        folder = pending.pop()
        try:
            if os.lstat(folder).st_mode & 0o077:
                dirs.append(folder)
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                pending.append(Path(entry.path))
            elif stat.S_ISREG(mode) and mode & 0o077:
                files.append(Path(entry.path))
    return sorted(dirs), sorted(files)


def dirs_check(root: Path, loose: list[Path]) -> Check:
    if not loose:
        return Check("home.dirs", CheckStatus.OK, f"{root} and its folders are private (0700)")
    return Check(
        "home.dirs",
        CheckStatus.FAIL,
        f"{_list(loose)} {'is' if len(loose) == 1 else 'are'} open to group/others ({_mode(loose[0])})",
        _chmod("700", loose),
    )


def files_check(root: Path, loose: list[Path]) -> Check:
    if not loose:
        return Check("home.files", CheckStatus.OK, f"files under {root} are private (0600)")
    return Check(
        "home.files",
        CheckStatus.FAIL,
        f"{_list(loose)} {'is' if len(loose) == 1 else 'are'} readable by group/others ({_mode(loose[0])}); "
        "logs may quote prompts",
        _chmod("600", loose),
    )


def disk_checks(root: Path, hf_cache: Path | None) -> list[Check]:
    """Free space where logs and the cache go (and the Hugging Face cache, when on another disk)."""
    places = [("home.disk", root)]
    if hf_cache is not None:
        places.append(("home.disk-hf-cache", hf_cache))
    found: list[Check] = []
    devices: set[int] = set()
    for name, place in places:
        existing = _existing(place)
        try:
            device = existing.stat().st_dev
            free = shutil.disk_usage(existing).free
        except OSError as exc:
            found.append(Check(name, CheckStatus.WARN, f"cannot read free space of {existing} ({exc.strerror})"))
            continue
        if device in devices:
            continue
        devices.add(device)
        finding = f"{_gib(free)} free for {place}"
        if free < MIN_FREE_BYTES:
            found.append(Check(name, CheckStatus.WARN, finding, "Free some disk space (logs and caches need room)."))
        else:
            found.append(Check(name, CheckStatus.OK, finding))
    return found


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _list(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _mode(path: Path) -> str:
    try:
        return f"mode {stat.S_IMODE(path.stat().st_mode):04o}"
    except OSError:
        return "mode unknown"


def _chmod(mode: str, paths: list[Path]) -> str:
    if len(paths) > SHOWN:
        kind = "d" if mode == "700" else "f"
        root = os.path.commonpath([str(p) for p in paths])
        return f"find {shlex.quote(root)} -type {kind} -exec chmod {mode} {{}} +"
    return f"chmod {mode} " + " ".join(shlex.quote(str(p)) for p in paths)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
