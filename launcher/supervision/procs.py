"""Starting and stopping backend processes: behind a watchdog, in their own process group, group kill.

Every backend runs under `watchdog.py` (see there): the supervisor signals the watchdog, and the
watchdog stops the backend's whole tree, also when the launcher itself is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from launcher.supervision.clock import Clock

PR_SET_PDEATHSIG = 1
POLL = 0.05
KILL_WAIT = 5.0
# psutil reports create time rounded by the platform (as statefile.CREATE_TIME_TOLERANCE).
CREATE_TIME_TOLERANCE = 0.01
WATCHDOG = Path(__file__).with_name("watchdog.py")
# The watchdog moves these back into the backend's environment (see watchdog.MOVED): a preloaded
# OpenBLAS belongs in the model server, not in a 10 MB Python process that only waits.
_MOVED = ("LD_PRELOAD", "DYLD_INSERT_LIBRARIES")
_MOVED_PREFIX = "_ANYCLAUDE_CHILD_"


def _death_signal_hook(parent: int) -> Callable[[], None]:
    def hook() -> None:
        # Linux only: the kernel sends SIGTERM to the watchdog when the launcher dies, even by SIGKILL;
        # the watchdog then stops the backend's whole tree. Armed before exec, so no window is left open.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The launcher may have died between fork and prctl; then nobody would ever signal us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


def watchdog_argv(argv: tuple[str, ...], grace: float, parent_death_signal: bool) -> tuple[str, ...]:
    """The command line that runs `argv` under the watchdog (what the state file records and proves)."""
    watch = () if parent_death_signal else ("--no-parent-watch",)
    # -E: the backend's PYTHONPATH/PYTHONHOME (meant for its own Python) must not change this one.
    # -S on Linux: no site-packages to scan (tens of ms before the backend starts); it needs none there.
    flags = ("-E", "-S") if sys.platform.startswith("linux") else ("-E",)
    head = (sys.executable, *flags, str(WATCHDOG), "--parent", str(os.getpid()), "--grace", f"{grace:g}")
    return (*head, *watch, "--", *argv)


def find_program(program: str, env: Mapping[str, str], cwd: str | None) -> str | None:
    """Where `program` (argv[0]) would be run from, or None when it is missing or not executable."""
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else Path(cwd or os.getcwd()) / program
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


async def spawn(
    argv: tuple[str, ...],
    env: Mapping[str, str],
    cwd: str | None,
    output_fd: int,
    parent_death_signal: bool,
    grace: float = 10.0,
) -> tuple[asyncio.subprocess.Process, tuple[str, ...]]:
    """Start `argv` under the watchdog in a new session, stdin closed, output to `output_fd`.

    Returns the watchdog's process and its command line. `grace` is how long the watchdog waits
    between SIGTERM and SIGKILL when it stops the tree on its own (the launcher died).

    Raises:
        OSError: the program cannot be executed (not found, not executable).
    """
    if find_program(argv[0], env, cwd) is None:
        # Checked here: the watchdog's own exec failure would only show as a crash, retried with backoff.
        raise FileNotFoundError(2, "not found or not executable", argv[0])
    command = watchdog_argv(argv, grace, parent_death_signal)
    moved = dict(env)
    for name in _MOVED:
        if name in moved:
            moved[_MOVED_PREFIX + name] = moved.pop(name)
    use_hook = parent_death_signal and sys.platform.startswith("linux")
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=output_fd,
        stderr=output_fd,
        env=moved,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_death_signal_hook(os.getpid()) if use_hook else None,
    )
    return process, command


def family(pid: int) -> list[psutil.Process]:
    """The process and all its live descendants, including ones that left its process group."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_group(pgid: int, members: list[psutil.Process], sig: signal.Signals) -> None:
    """Signal the whole process group, plus descendants that escaped it (setsid, daemonised).

    Each process gets the signal once: a member still in the group is reached by killpg alone (a
    SIGTERM handler that runs twice is how a server's shutdown goes wrong).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            if sig == signal.SIGKILL or os.getpgid(proc.pid) != pgid:
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
    watchdog: bool = False,
    force: bool = False,
) -> bool:
    """SIGTERM the group of `pid` (and escaped descendants), wait up to `timeout`, then SIGKILL.

    With `watchdog`, `pid` is a watchdog and gets the only SIGTERM: it passes one on to each process
    of the tree. `force` skips SIGTERM (a hung process cannot act on it). `reap` is called while
    waiting so a child of ours is collected and does not linger as a zombie (a zombie still counts as
    a group member for killpg). `hurry` returning True ends the grace period early (a second Ctrl-C).
    Returns True if SIGKILL was needed.
    Bounded: it never waits on pipes, only on processes, so a grandchild holding the backend's
    output pipe cannot make it hang.
    """
    members = family(pid)
    if force:
        timeout = 0.0
    elif watchdog:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    else:
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


# ---------------------------------------------------------------------- a watchdog that died on its own


def tree_of(pid: int) -> dict[int, float]:
    """The live descendants of `pid`, each with its create time (what later proves it is ours)."""
    found: dict[int, float] = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return found
    for proc in children:
        with contextlib.suppress(psutil.Error):
            found[proc.pid] = proc.create_time()
    return found


def leftovers(session: int, since: float, recorded: Mapping[int, float]) -> list[psutil.Process]:
    """What is left of the tree a watchdog ran, once the watchdog itself is gone.

    `recorded` are the descendants seen while it lived (pid -> create time): each still running with
    the same create time is the same process (the kernel never gives one pid and start time to two).
    The watchdog led its own session (`session` is its pid, `since` its create time): a process in
    that session started after it is ours too (one forked since the last look), but only while a
    proven member still holds the session id, so a pid reused for an unrelated session never counts.
    """
    found: dict[int, psutil.Process] = {}
    for pid, created in recorded.items():
        with contextlib.suppress(psutil.Error, OSError):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) <= CREATE_TIME_TOLERANCE and _alive(proc):
                found[pid] = proc
    pinned = False
    for proc in found.values():
        with contextlib.suppress(OSError):
            pinned = pinned or os.getsid(proc.pid) == session
    if pinned:
        for proc in psutil.process_iter():
            if proc.pid in found:
                continue
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) == session and proc.create_time() >= since - CREATE_TIME_TOLERANCE:
                    found[proc.pid] = proc
    return list(found.values())


def stop_processes(found: list[psutil.Process], grace: float) -> list[psutil.Process]:
    """SIGTERM each of `found` once, SIGKILL what is left after `grace` seconds; returns what got SIGKILL.

    psutil checks a process's create time before each signal, so a pid reused meanwhile is spared.
    """
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(found, timeout=grace)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=KILL_WAIT)
    return list(left)
