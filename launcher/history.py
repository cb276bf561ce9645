"""Config history: every applied config is kept in `$ANYCLAUDE_HOME/config-history/` (the last 20).

`anyclaude config history` lists them; `anyclaude rollback [N]` writes snapshot N back to the config
file, and the running anyclaude's watcher then applies it like any other edit.

A snapshot never holds a secret (docs/reliability.md 27): literal keys are masked with a token naming their
field (`launcher.masking`), and a rollback takes them from the current config file, where they live.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.config import Settings
from launcher.diskfull import TROUBLE
from launcher.errors import ConfigError
from launcher.masking import RestoreError, has_secrets, mask_text, unmask_text
from launcher.paths import Home, private_dir, write_private

KEEP = 20
WHAT = "config history"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    saved_at: float
    digest: str

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def history_dir(home: Home) -> Path:
    return home.root / "config-history"


def snapshots(home: Home) -> list[Snapshot]:
    """Saved configs, newest first (index 0 is the one applied last)."""
    folder = history_dir(home)
    if not folder.is_dir():
        return []
    found = []
    for file in folder.glob("*.json"):
        stamp, _, digest = file.stem.partition("-")
        if stamp.isdigit():
            found.append(Snapshot(file, int(stamp) / 1000, digest))
    return sorted(found, key=lambda s: s.saved_at, reverse=True)


def record_applied(settings: Settings) -> Snapshot | None:
    """Keep the config text `settings` was loaded from, unless it equals the newest snapshot.

    Never raises for a full disk (history is a convenience; the config that runs is what matters):
    the failure is reported once to `diskfull.TROUBLE` and None is returned.
    """
    if settings.path is None or not settings.text:
        return None
    try:
        snapshot = _record(settings)
    except OSError as exc:
        # Kept once space returns; a later edit that fails too replaces this one (it is newer).
        TROUBLE.failed(WHAT, history_dir(settings.home), exc, retry=lambda: _record(settings))
        return None
    TROUBLE.ok(WHAT)
    return snapshot


def _record(settings: Settings) -> Snapshot:
    text = mask_text(settings.text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    existing = snapshots(settings.home)
    _scrub(existing)
    if existing and existing[0].digest == digest:
        return existing[0]
    folder = private_dir(history_dir(settings.home))
    millis = max(int(time.time() * 1000), int(existing[0].saved_at * 1000) + 1 if existing else 0)
    path = folder / f"{millis}-{digest}.json"
    write_private(path, text)
    for old in existing[KEEP - 1 :]:
        old.path.unlink(missing_ok=True)
    return Snapshot(path, millis / 1000, digest)


def _scrub(existing: list[Snapshot]) -> None:
    """Mask the secrets of snapshots an older anyclaude kept verbatim."""
    for snap in existing:
        try:
            text = snap.text
            if has_secrets(text):
                write_private(snap.path, mask_text(text))
        except ValueError:  # not JSON: a file nobody can roll back to anyway
            snap.path.unlink(missing_ok=True)


def rollback(home: Home, config_path: Path, index: int = 1) -> Snapshot:
    """Write snapshot `index` (1 = the config before the current one) back to `config_path`."""
    found = snapshots(home)
    if not 0 <= index < len(found):
        raise ConfigError(
            f"There is no config snapshot #{index} ({len(found)} kept).",
            hint="`anyclaude config history` lists them.",
        )
    snapshot = found[index]
    try:
        current = config_path.read_text(encoding="utf-8") if config_path.exists() else "{}"
        text = unmask_text(snapshot.text, current)
    except RestoreError as exc:
        raise ConfigError(
            f"Config snapshot #{index} had a secret at {exc.field}, and {config_path} has none there to take"
            " it from (history never keeps secrets).",
            hint=f"Put the key (or a ${{ENV_VAR}} reference) back at {exc.field} in {config_path}, then run"
            " rollback again.",
        ) from None
    except ValueError:
        raise ConfigError(
            f"{config_path} is not valid JSON, so the keys of snapshot #{index} cannot be taken from it.",
            hint="Fix the file's JSON (keys included), then run rollback again.",
        ) from None
    mode = config_path.stat().st_mode & 0o777 if config_path.exists() else 0o644
    tmp = config_path.with_name(f".{config_path.name}.rollback")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(config_path)  # one rename: the watcher sees a whole file, never a half-written one
    return snapshot
