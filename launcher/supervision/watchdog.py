"""The watchdog between the launcher and one backend: nothing the backend starts outlives the launcher.

    python -E watchdog.py --parent PID --grace SECONDS [--no-parent-watch] -- ARGV...

The supervisor starts this instead of ARGV and records it as the backend's process. It starts ARGV
as its only child, in a process group of its own, and:

- is a child subreaper (Linux): what the backend starts and then orphans (a server a shell script ran
  without `exec`, a worker whose parent died, a child that called setsid and was left) is re-parented
  to the watchdog instead of init, so the whole tree stays findable;
- gets SIGTERM when the launcher dies, even by SIGKILL (parent-death signal on Linux; elsewhere it
  polls its parent), and then stops the tree exactly as on a stop;
- on SIGTERM sends ONE SIGTERM to the backend's group and to each descendant outside that group
  (a handler that runs twice is how servers corrupt their shutdown), waits up to `grace` seconds,
  then sends SIGKILL to whatever is left;
- when the backend exits by itself, stops what it left behind the same way, then exits the way the
  backend did (same code, same signal), so the supervisor sees the backend's own exit.

It is run by path (`python -E -S` on Linux: no site-packages, so the backend starts a few tens of
milliseconds sooner) and never imported by the launcher: standard library only, descendants read from
/proc on Linux and through psutil elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LINUX = sys.platform.startswith("linux")
POLL = 0.05
PARENT_POLL = 0.25  # where there is no parent-death signal: how often the parent is looked at
KILL_WAIT = 5.0
# Loader variables meant for the backend (an OpenBLAS preload), not for this small Python process.
MOVED_PREFIX = "_ANYCLAUDE_CHILD_"
MOVED = ("LD_PRELOAD", "DYLD_INSERT_LIBRARIES")
# Signals the watchdog re-raises to exit as the backend did; others (core-dumping ones) become 128 + N.
RERAISED = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2})


class _Stop(Exception):
    """Raised by the SIGTERM handler to break out of the blocking wait."""


class _State:
    stop_requested = False
    interruptible = False


def _on_sigterm(signum: int, frame: object) -> None:
    _State.stop_requested = True
    if _State.interruptible:
        _State.interruptible = False
        raise _Stop


def _prctl(option: int, value: int) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the caller's polling takes over
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _start(argv: list[str]) -> int:
    """Fork and exec `argv` in a new process group; the child dies with us if we are killed."""
    env = dict(os.environ)
    for name in MOVED:
        value = env.pop(MOVED_PREFIX + name, None)
        if value is not None:
            env[name] = value
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe-ish work until exec
        try:
            os.setpgid(0, 0)
            for sig in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            if LINUX:
                # If the watchdog itself is killed (OOM, kill -9), the backend must not run on unsupervised.
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(2, f"anyclaude: cannot run {argv[0]}: {exc.strerror}\n".encode(errors="replace"))
        os._exit(127)
    # Both sides set the group: whichever runs first, a signal to the group can never miss the child.
    with contextlib.suppress(OSError):  # the child set it already, or has exec'd (then it did)
        os.setpgid(pid, pid)
    return pid


def _descendants() -> list[int]:
    """The live (not zombie) descendants of this process."""
    if not os.path.isdir("/proc/self"):
        return _descendants_psutil()
    children: dict[int, list[int]] = {}
    zombies: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) < 2:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        if fields[0] == b"Z":
            zombies.add(pid)
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return [pid for pid in found if pid not in zombies]


def _descendants_psutil() -> list[int]:
    import psutil

    try:
        found = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    alive = []
    for proc in found:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except psutil.Error:
            continue
    return alive


def _reap(child: int, status: int | None) -> int | None:
    """Collect every exited child (orphans are ours too, as subreaper); returns the backend's status."""
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child:
            status = code


def _signal_tree(child: int, sig: signal.Signals) -> None:
    """`sig` once to the backend's group, and once to each live descendant that left that group."""
    with contextlib.suppress(OSError):  # the group is empty already
        os.killpg(child, sig)
    for pid in _descendants():
        try:
            if os.getpgid(pid) != child:
                os.kill(pid, sig)
        except OSError:  # gone meanwhile
            continue


def _stop_tree(child: int, status: int | None, grace: float) -> int | None:
    """SIGTERM the tree, wait up to `grace` for it to go, then SIGKILL. Returns the backend's status."""
    status = _reap(child, status)
    if status is not None and not _descendants():
        return status
    _signal_tree(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        status = _reap(child, status)
        if status is not None and not _descendants():
            return status
        time.sleep(POLL)
    _signal_tree(child, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline:
        status = _reap(child, status)
        if status is not None and not _descendants():
            break
        time.sleep(POLL)
    return status


def _wait(child: int, parent: int, watch_parent: bool) -> int | None:
    """Block until the backend exits (its status) or a stop is asked for (None)."""
    poll = watch_parent and not LINUX
    _State.interruptible = True
    try:
        while True:
            if _State.stop_requested:
                return None
            if poll:
                pid, code = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    if os.getppid() != parent:
                        return None
                    time.sleep(PARENT_POLL)
                    continue
            else:
                pid, code = os.waitpid(-1, 0)
            if pid == child:
                return code
    except _Stop:
        return None
    finally:
        _State.interruptible = False


def _exit_like(status: int | None) -> None:
    if status is None:
        os._exit(1)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in RERAISED:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _parse(argv: list[str]) -> tuple[int, float, bool, list[str]]:
    """`--parent PID --grace S [--no-parent-watch] -- ARGV...` (no argparse: it costs start-up time)."""
    parent, grace, watch = 0, 10.0, True
    i = 0
    while i < len(argv) and argv[i] != "--":
        flag = argv[i]
        if flag == "--parent":
            parent, i = int(argv[i + 1]), i + 2
        elif flag == "--grace":
            grace, i = float(argv[i + 1]), i + 2
        elif flag == "--no-parent-watch":
            watch, i = False, i + 1
        else:
            raise SystemExit(f"anyclaude watchdog: unknown option {flag}")
    command = argv[i + 1 :]
    if not command or not parent:
        raise SystemExit("usage: watchdog.py --parent PID [--grace S] [--no-parent-watch] -- ARGV...")
    return parent, grace, watch, command


def main(argv: list[str] | None = None) -> None:
    parent, grace, watch_parent, command = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if LINUX:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        if watch_parent:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The launcher may have died before the parent-death signal was armed: nobody would ever stop us.
    if watch_parent and os.getppid() != parent:
        os._exit(1)
    child = _start(command)
    status = _wait(child, parent, watch_parent)
    # From here on a second SIGTERM (the launcher dying during a stop) changes nothing: one stop is running.
    status = _stop_tree(child, status, grace)
    _exit_like(status)


if __name__ == "__main__":
    main()
