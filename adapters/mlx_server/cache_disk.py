"""Prompt-cache slots on disk, so a restarted server, even one killed with SIGKILL, starts warm.

Layout: `<cache dir>/<model fingerprint>/<slot id>.safetensors`, one file per slot, written with mlx-lm's
`save_prompt_cache`; its metadata holds the format, the fingerprint, the slot's namespace (chat-template
settings), its token ids, where its prompt ends, its hit count and its owner (Claude Code's session and agent
ids, so the eviction order survives a restart). The fingerprint hashes `config.json`,
each weights file's name, size and mtime, and the chat template, so a changed model or template gets a
new folder and a stale cache is never read for it.

Writes are atomic (a temp file in the same folder, then `os.replace`): a kill mid-write leaves the old
file or none, never half of one. Files are 0600 in 0700 folders, as they hold prompts. One background
thread writes: the generation thread hands it frozen, already evaluated copies (`cache_mlx.frozen_copy`),
so a save never holds up a request; a newer plan for a folder replaces one not yet started.

Loading skips, with a warning, any file that does not parse, names another fingerprint, or does not match
the model's layers; the next save of that folder removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("anyclaude.mlx_server")

FORMAT = "anyclaude-prompt-cache/1"
SUFFIX = ".safetensors"
_TEMP_MARK = ".tmp"


def model_fingerprint(model_dir: Path, chat_template: str | None) -> str:
    """16 hex digits naming a model's weights and template; the folder its slots are saved in."""
    digest = hashlib.sha256()
    config = model_dir / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for weights in sorted(model_dir.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"\0{weights.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    digest.update(b"\0template\0" + (chat_template or "").encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SavedSlot:
    """One slot as written to or read from disk; `cache` is a frozen copy (or freshly loaded layers)."""

    id: str
    namespace: str
    tokens: list[int]
    prompt_length: int
    hits: int
    cache: list[Any]
    session: str = ""
    agent: str = ""


@dataclass
class _Plan:
    directory: Path
    fingerprint: str
    writes: dict[str, SavedSlot]
    keep: set[str]


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, and an existing folder keeps its mode


def write_slots(plan_dir: Path, fingerprint: str, writes: Sequence[SavedSlot], keep: set[str]) -> None:
    """Write `writes` atomically into `plan_dir`, then remove slot files whose id is not in `keep`."""
    from mlx_lm.models.cache import save_prompt_cache

    _private_dir(plan_dir.parent)
    _private_dir(plan_dir)
    for slot in writes:
        final = plan_dir / f"{slot.id}{SUFFIX}"
        temp = plan_dir / f".{slot.id}.{secrets.token_hex(4)}{_TEMP_MARK}{SUFFIX}"
        metadata = {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "namespace": slot.namespace,
            "tokens": ",".join(map(str, slot.tokens)),
            "prompt_length": str(slot.prompt_length),
            "hits": str(slot.hits),
            "session": slot.session,
            "agent": slot.agent,
        }
        try:
            save_prompt_cache(str(temp), slot.cache, metadata)
            os.chmod(temp, 0o600)
            os.replace(temp, final)  # atomic: readers see the old file or the new one
        finally:
            temp.unlink(missing_ok=True)
    for path in plan_dir.glob(f"*{SUFFIX}"):
        if path.name.startswith(".") or path.name.removesuffix(SUFFIX) not in keep:
            path.unlink(missing_ok=True)


def load_slots(directory: Path, fingerprint: str, layers: int) -> list[SavedSlot]:
    """Every valid slot file in `directory`, most recently written first; invalid ones are skipped with a warning."""
    if not directory.is_dir():
        return []
    found: list[tuple[float, SavedSlot]] = []
    for path in directory.glob(f"*{SUFFIX}"):
        if path.name.startswith("."):
            path.unlink(missing_ok=True)  # a temp file left by a kill mid-write
            continue
        try:
            found.append((path.stat().st_mtime, read_slot(path, fingerprint, layers)))
        except Exception as exc:  # any unreadable or foreign file: start without it rather than fail
            log.warning("prompt cache: skipping %s: %s", path, exc)
    found.sort(key=lambda item: item[0], reverse=True)
    return [slot for _, slot in found]


def read_slot(path: Path, fingerprint: str, layers: int) -> SavedSlot:
    """One slot file, checked against the model; raises (OSError, ValueError, ...) when it cannot be used."""
    from mlx_lm.models.cache import KVCache, load_prompt_cache

    cache, meta = load_prompt_cache(str(path), return_metadata=True)  # type: ignore[no-untyped-call]
    return _validated(path, cache, meta, fingerprint, layers, KVCache)


def _validated(
    path: Path, cache: list[Any], meta: dict[str, str], fingerprint: str, layers: int, kv_type: type
) -> SavedSlot:
    if meta.get("format") != FORMAT:
        raise ValueError(f"unknown format {meta.get('format')!r}")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError("saved for another model or chat template")
    tokens = [int(t) for t in meta["tokens"].split(",")] if meta.get("tokens") else []
    if len(cache) != layers or not all(type(layer) is kv_type for layer in cache):
        raise ValueError(f"{len(cache)} cache layers do not match the model's {layers}")
    if not tokens or any(int(layer.offset) != len(tokens) or layer.keys.shape[2] < len(tokens) for layer in cache):
        raise ValueError("token count and cache length disagree")
    prompt_length = int(meta.get("prompt_length", len(tokens)))
    return SavedSlot(
        id=path.name.removesuffix(SUFFIX),
        namespace=meta.get("namespace", ""),
        tokens=tokens,
        prompt_length=min(prompt_length, len(tokens)),
        hits=int(meta.get("hits", 0)),
        cache=cache,
        session=meta.get("session", ""),
        agent=meta.get("agent", ""),
    )


class DiskWriter:
    """The background thread that writes slot files; plans for one folder coalesce (newest wins).

    A write that fails (a full disk, a folder gone read-only) is said once, with how to free space, and its
    slots are handed back through `take_failed` so the next save writes them again; once a write works
    again, that is said too. The server goes on meanwhile: only the cache's persistence waits.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[Path, _Plan] = {}
        self._busy = False
        self._writing: tuple[Path, set[str]] | None = None  # the plan being written: its folder and slot ids
        self._thread: threading.Thread | None = None
        self._failed: dict[Path, set[str]] = {}  # slot ids whose last write failed, by folder
        self._failing: str | None = None  # the reason of the failure last reported
        self.failures = 0  # writes that failed since start

    @property
    def failing(self) -> str | None:
        """Why the last write failed, while writes fail; None once one works."""
        with self._cond:
            return self._failing

    def take_failed(self, directory: Path) -> set[str]:
        """Ids of slots in `directory` whose write failed since the last call (they are to be written again)."""
        with self._cond:
            return self._failed.pop(directory, set())

    def submit(self, directory: Path, fingerprint: str, writes: Sequence[SavedSlot], keep: set[str]) -> None:
        with self._cond:
            plan = self._pending.get(directory)
            if plan is None:
                plan = self._pending[directory] = _Plan(directory, fingerprint, {}, set())
            plan.writes.update({slot.id: slot for slot in writes})
            plan.keep = set(keep)
            plan.writes = {key: slot for key, slot in plan.writes.items() if key in plan.keep}
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="prompt-cache-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_for(self, directory: Path, slot_id: str, timeout: float) -> bool:
        """Block until no submitted plan still has to write slot `slot_id` of `directory` (True), or `timeout`."""

        def written() -> bool:
            plan = self._pending.get(directory)
            writing = self._writing is not None and self._writing[0] == directory and slot_id in self._writing[1]
            return not writing and not (plan is not None and slot_id in plan.writes)

        with self._cond:
            return self._cond.wait_for(written, timeout)

    def wait(self, timeout: float) -> bool:
        """Block until every submitted plan is written (True) or `timeout` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._busy

    def _run(self) -> None:
        _yield_cpu()
        while True:
            with self._cond:
                self._busy = False
                self._writing = None
                self._cond.notify_all()
                self._cond.wait_for(lambda: bool(self._pending))
                _, plan = self._pending.popitem()
                self._busy = True
                self._writing = (plan.directory, set(plan.writes))
            try:
                write_slots(plan.directory, plan.fingerprint, list(plan.writes.values()), plan.keep)
            except Exception as exc:  # a full disk must not kill the writer; the next save tries again
                self._failed_plan(plan, exc)
            else:
                self._wrote()

    def _failed_plan(self, plan: _Plan, exc: Exception) -> None:
        with self._cond:
            self._failed.setdefault(plan.directory, set()).update(plan.writes)
            self.failures += 1
            reason = f"{type(exc).__name__}: {exc}"
            first, self._failing = self._failing is None, reason
        if first:
            log.warning(
                "prompt cache: cannot save to %s (%s); the server goes on and saves again once there is room "
                "(free space on that disk, or set cacheDir elsewhere)",
                plan.directory,
                reason,
            )
        else:
            log.debug("prompt cache: saving to %s still fails: %s", plan.directory, reason)

    def _wrote(self) -> None:
        with self._cond:
            recovered, self._failing = self._failing is not None, None
        if recovered:
            log.warning("prompt cache: saving works again")


def _yield_cpu() -> None:
    """Lower this thread's scheduling priority (Linux: a thread is a task with its own nice value).

    A save in a busy stretch writes every slot that changed (tens of MB each) while requests run: at normal
    priority the copy competed with the model's threads for the cores (measured: 4 sessions at once 10% slower
    during a save on 2 cores). At the lowest priority it runs in the gaps; the files are only a little later.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
