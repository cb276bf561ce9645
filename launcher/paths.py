"""Where anyclaude keeps its files: `$ANYCLAUDE_HOME` (default `~/.anyclaude`).

The folder is private (0700) and so is every file in it (0600): logs may quote prompts and
state files name processes, neither is anyone else's business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class Home:
    """The anyclaude home folder and its parts."""

    root: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Home:
        env = os.environ if env is None else env
        raw = env.get("ANYCLAUDE_HOME") or "~/.anyclaude"
        return cls(Path(raw).expanduser().absolute())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def ensure(self) -> Home:
        """Create the folders (0700), tightening the mode of any that exist already."""
        for folder in (self.root, self.logs, self.run, self.cache):
            private_dir(folder)
        return self


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make sure it is 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def write_private(path: Path, data: str) -> None:
    """Write `data` to `path` atomically (temp file + rename) with mode 0600.

    A reader never sees a half-written file, and the file is never world-readable even briefly.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
