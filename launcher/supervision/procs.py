"""Starting and stopping backend processes: own process group, parent-death signal, group kill."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping

import psutil

from launcher.supervision.clock import Clock

PR_SET_PDEATHSIG = 1
POLL = 0.05


def _death_signal_hook(parent: int) -> Callable[[], None]:
    def hook() -> None:
        # Linux only: the kernel sends SIGKILL to this child when the launcher dies, even by SIGKILL,
        # so a killed launcher leaves no orphaned backend holding a port and gigabytes of memory.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # The launcher may have died between fork and prctl; then nobody would ever signal us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


async def spawn(
    argv: tuple[str, ...], env: Mapping[str, str], cwd: str | None, output_fd: int, parent_death_signal: bool
) -> asyncio.subprocess.Process:
    """Start `argv` in a new session (its own process group), stdin closed, output to `output_fd`.

    Raises:
        OSError: the program cannot be executed (not found, not executable).
    """
    use_hook = parent_death_signal and sys.platform.startswith("linux")
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=output_fd,
        stderr=output_fd,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_death_signal_hook(os.getpid()) if use_hook else None,
    )


def family(pid: int) -> list[psutil.Process]:
    """The process and all its live descendants, including ones that left its process group."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_group(pgid: int, members: list[psutil.Process], sig: signal.Signals) -> None:
    """Signal the whole process group, plus descendants that escaped it (setsid, daemonised)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


def _group_alive(pgid: int, members: list[psutil.Process]) -> bool:
    if any(_alive(p) for p in members):
        return True
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg also "finds" zombies: a killed grandchild re-parented to an init that reaps slowly would
    # keep a stop waiting for nothing. Only a live member of the group counts.
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _alive(proc):
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def terminate_group(
    pid: int,
    timeout: float,
    clock: Clock,
    reap: Callable[[], bool] | None = None,
    hurry: Callable[[], bool] | None = None,
) -> bool:
    """SIGTERM the group of `pid` (and escaped descendants), wait up to `timeout`, then SIGKILL.

    `reap` is called while waiting so a child of ours is collected and does not linger as a
    zombie (a zombie still counts as a group member for killpg). `hurry` returning True ends the
    grace period early (a second Ctrl-C). Returns True if SIGKILL was needed.
    Bounded: it never waits on pipes, only on processes, so a grandchild holding the backend's
    output pipe cannot make it hang.
    """
    members = family(pid)
    signal_group(pid, members, signal.SIGTERM)
    deadline = clock.now() + timeout
    while clock.now() < deadline and not (hurry and hurry()):
        if reap:
            reap()
        if not _group_alive(pid, members):
            return False
        await asyncio.sleep(POLL)
    members = [*members, *family(pid)]
    signal_group(pid, members, signal.SIGKILL)
    kill_deadline = clock.now() + 5.0
    while clock.now() < kill_deadline:
        if reap:
            reap()
        if not _group_alive(pid, members):
            break
        await asyncio.sleep(POLL)
    return True
