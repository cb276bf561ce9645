"""docs/reliability.md items 1–5, 8, 10–13 with real processes: `anyclaude serve` supervising the fault backend."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from launcher.supervision.ports import free_port, port_holder
from tests.harness import Serve, alive, anyclaude, launch_serve, serves, start_serve, wait_until

StartServe = Callable[..., Serve]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda *flags, **kwargs: start_serve(tmp_path, tuple(flags), **kwargs)) as start:
        yield start


# ----------------------------------------------------------------------------- starting


def test_slow_backend_is_ready_within_one_poll_of_answering(serve: StartServe) -> None:
    s = serve("--ready-after", "1.5")
    record = s.wait_state("READY")
    answered_after = float(re.search(r"after ([\d.]+) s", record["reason"]).group(1))  # type: ignore[union-attr]
    assert answered_after >= 1.5, record["reason"]
    # READY is seen within one poll of the backend's first 200 (both clocks are this machine's wall
    # clock; the time the processes took to start, which a busy machine stretches, is not counted).
    answered = s.marks("ANSWERED")[0][2]
    log = (s.home / "logs" / "anyclaude.log").read_text()
    stamp = re.search(r"^(\S+ \S+),(\d{3}) INFO anyclaude.supervisor: fault: STARTING -> READY", log, re.M)
    assert stamp is not None, log
    ready = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")) + int(stamp.group(2)) / 1000
    assert -0.01 <= ready - answered < 0.25, (ready - answered, record["reason"])
    wait_until(lambda: "is ready" in s.text(), 5, what="the ready line")


def test_backend_exiting_during_start_is_reported_at_once_with_its_log(serve: StartServe) -> None:
    s = serve(
        "--no-listen", "--exit-after", "0.3", "--exit-code", "3", entry={"maxRestarts": 0, "startupTimeout": 60000}
    )
    started = time.monotonic()
    code = s.wait_exit(timeout=15)
    elapsed = time.monotonic() - started
    out = s.text()
    assert code == 3, out
    assert "exited with code 3 while starting" in out
    assert "fault backend pid" in out  # the last lines of its log are shown
    assert elapsed < 10, "reported after the start timeout instead of at once"
    assert "anyclaude restart" not in out, "serve has ended: a restart command would find nothing to restart"
    assert "then start anyclaude again" in out


def test_backend_that_keeps_dying_backs_off_then_goes_fatal_and_restart_clears_it(
    serve: StartServe, tmp_path: Path
) -> None:
    poison = tmp_path / "poison"
    s = serve("--die-while", str(poison), entry={"maxRestarts": 4, "restartDelay": 200, "stableAfter": 60000})
    s.wait_state("READY")
    poison.touch()
    os.kill(s.backend_pid(), signal.SIGKILL)
    record = s.wait_state("FATAL", timeout=20)
    assert "gave up after 5 failed starts" in record["reason"]
    assert len(s.marks("START")) == 5  # the first good start, then 4 restarts that die at once
    # The delays the supervisor chose (process start-up time on a busy machine would blur measured gaps).
    log = (s.home / "logs" / "anyclaude.log").read_text()
    delays = [float(d) for d in re.findall(r"next start in ([\d.]+) s", log)]
    assert len(delays) == 4, delays
    for delay, expected in zip(delays, (0.2, 0.4, 0.8, 1.6), strict=True):
        assert expected * 0.85 <= delay <= expected * 1.15, delays  # doubling, with 10 % jitter

    status = anyclaude("status", "--json")
    row = json.loads(status.stdout)["backends"][0]
    assert row["state"] == "FATAL" and "gave up" in row["reason"]

    poison.unlink()
    result = anyclaude("restart", "fault")
    assert result.returncode == 0, result.stderr
    assert "READY" in result.stdout
    s.wait_state("READY")


def test_backoff_resets_after_a_stable_run(serve: StartServe) -> None:
    s = serve("--exit-after", "0.8", entry={"maxRestarts": 1, "stableAfter": 300, "restartDelay": 100})
    wait_until(lambda: len(s.marks("START")) >= 4, timeout=20, what="four starts")
    assert s.state() != "FATAL", "a backend that crashes after stable runs must keep being restarted"
    assert s.proc.poll() is None


def test_foreign_process_on_the_port_is_named_and_left_alone(serve: StartServe, tmp_path: Path) -> None:
    port = free_port()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(60)",
        ]
    )
    try:
        wait_until(lambda: any(c.laddr.port == port for c in psutil.Process(holder.pid).net_connections()), 10)
        s = serve(port=port)
        code = s.wait_exit()
        out = s.text()
        assert code == 1, out
        assert f"Port {port} is in use by pid {holder.pid}" in out
        assert holder.poll() is None, "the foreign process must be left alone"
        assert not s.marks("START"), "no backend may be started on a taken port"
    finally:
        holder.kill()
        holder.wait()


def test_stale_backend_of_a_killed_launcher_is_stopped_before_the_next_start(serve: StartServe) -> None:
    first = serve(env={"ANYCLAUDE_PARENT_DEATH_SIGNAL": "0"})
    first.wait_state("READY")
    old_pid = first.backend_pid()
    first.proc.kill()
    first.proc.wait()
    assert alive(old_pid)

    status = json.loads(anyclaude("status", "--json").stdout)["backends"]
    assert status[0]["state"] == "ORPHANED"

    second = serve(port=first.port)
    second.wait_state("READY")
    assert second.backend_pid() != old_pid
    wait_until(lambda: not alive(old_pid), 5, what="the stale backend to be gone")


# ----------------------------------------------------------------------------- running


def test_hung_backend_is_found_by_liveness_probe_and_restarted(serve: StartServe) -> None:
    s = serve("--hang-after", "1.0", entry={"healthInterval": 200, "healthTimeout": 300, "healthFailures": 2})
    s.wait_state("READY")
    first_pid = s.backend_pid()
    wait_until(lambda: len(s.marks("START")) >= 2, timeout=15, what="a restart")
    assert not alive(first_pid)
    log = (s.home / "logs" / "fault.log").read_text()
    assert "liveness probes failed" in log


def test_backend_that_failed_its_liveness_probes_is_killed_at_once(serve: StartServe) -> None:
    """A hung process cannot act on SIGTERM: waiting `stopTimeout` for it only lengthens the outage."""
    entry = {"healthInterval": 200, "healthTimeout": 300, "healthFailures": 2, "stopTimeout": 30000}
    s = serve("--hang-after", "1.0", "--ignore-sigterm", entry=entry)
    s.wait_state("READY")
    first_pid = s.backend_pid()
    wait_until(lambda: len(s.marks("START")) >= 2, timeout=15, what="a restart well before stopTimeout")
    assert not alive(first_pid)
    assert not s.marks("SIGTERM-IGNORED"), "a backend that failed its liveness probes gets SIGKILL, not SIGTERM"
    s.interrupt()  # the new one ignores SIGTERM too: stop it at once
    wait_until(lambda: "press Ctrl-C again" in s.text(), 5)
    s.interrupt()
    s.wait_exit()


def test_output_at_any_rate_stays_within_the_log_budget(serve: StartServe) -> None:
    s = serve("--spew", str(3_000_000), top={"logMaxBytes": 65536, "logBackups": 2})
    s.wait_state("READY", timeout=30)
    wait_until(lambda: len(list((s.home / "logs").glob("fault.log*"))) == 3, 10, what="rotation")
    s.interrupt()
    s.wait_exit()
    logs = list((s.home / "logs").glob("fault.log*"))
    assert len(logs) == 3
    assert sum(p.stat().st_size for p in logs) <= 65536 * 3


def test_invalid_utf8_output_is_logged_as_replacement_characters(serve: StartServe) -> None:
    s = serve("--invalid-utf8")
    s.wait_state("READY")
    log = s.home / "logs" / "fault.log"
    wait_until(lambda: "bad bytes" in log.read_text(encoding="utf-8"), 5)
    assert "bad bytes: \ufffd\ufffd\ufffd(" in log.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- stopping


def test_stop_is_bounded_for_a_backend_that_ignores_sigterm_and_its_grandchildren(serve: StartServe) -> None:
    s = serve("--ignore-sigterm", "--grandchild", "--escaped-grandchild", "--hold-pipes", entry={"stopTimeout": 1000})
    s.wait_state("READY")
    grandchildren = wait_until(
        lambda: [pid for kind, pid, _ in s.marks("GRANDCHILD")] if len(s.marks("GRANDCHILD")) >= 2 else None, 5
    )
    backend = s.backend_pid()
    started = time.monotonic()
    s.interrupt()
    assert s.wait_exit(timeout=15) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"stop took {elapsed:.1f} s"
    for pid in (backend, *grandchildren):
        wait_until(lambda pid=pid: not alive(pid), 5, what=f"pid {pid} to be gone")


def test_second_ctrl_c_stops_immediately(serve: StartServe) -> None:
    s = serve("--ignore-sigterm", entry={"stopTimeout": 30000})
    s.wait_state("READY")
    backend = s.backend_pid()
    started = time.monotonic()
    s.interrupt()
    wait_until(lambda: "press Ctrl-C again" in s.text(), 5)
    s.interrupt()
    s.wait_exit(timeout=10)
    assert time.monotonic() - started < 8
    wait_until(lambda: not alive(backend), 5)


def test_killed_launcher_takes_its_backend_along_with_the_parent_death_signal(serve: StartServe) -> None:
    s = serve()
    s.wait_state("READY")
    backend = s.backend_pid()
    s.proc.kill()
    s.proc.wait()
    wait_until(lambda: not alive(backend), 5, what="the backend to die with its launcher")


def test_orphan_without_death_signal_is_found_and_stopped_by_stop(serve: StartServe) -> None:
    s = serve(env={"ANYCLAUDE_PARENT_DEATH_SIGNAL": "0"})
    s.wait_state("READY")
    backend = s.backend_pid()
    s.proc.kill()
    s.proc.wait()
    assert alive(backend)
    result = anyclaude("stop", "fault")
    assert result.returncode == 0 and "orphaned" in result.stdout, result
    wait_until(lambda: not alive(backend), 5)
    assert not (s.home / "run" / "fault.json").exists()


def stop_spares_a_bystander(create_time_shift: float = 0.0, **extra: Any) -> None:
    """`anyclaude stop` on a state file naming a live unrelated process (its pid, its create time moved by
    `create_time_shift`, `extra` fields) says nothing was running and signals nothing."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        home = Path(os.environ["ANYCLAUDE_HOME"])
        (home / "run").mkdir(parents=True)
        create_time = psutil.Process(bystander.pid).create_time() + create_time_shift
        record = {"name": "fault", "kind": "command", "state": "READY", "pid": bystander.pid, **extra}
        record.update(create_time=create_time, launcher_pid=bystander.pid, launcher_create_time=create_time)
        (home / "run" / "fault.json").write_text(json.dumps(record))
        result = anyclaude("stop", "fault")
        assert result.returncode == 0, result.stderr
        assert "nothing was running" in result.stdout
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_state_file_pointing_at_an_unrelated_process_never_signals_it() -> None:
    stop_spares_a_bystander(create_time_shift=-100.0)  # the pid was reused by an unrelated process


# ----------------------------------------------------------------------------- the CLI around it


def test_status_logs_and_stop_from_another_terminal(serve: StartServe) -> None:
    s = serve()
    s.wait_state("READY")
    status = anyclaude("status")
    assert "fault" in status.stdout and "READY" in status.stdout
    logs = anyclaude("logs", "-n", "5", "fault")
    assert "fault backend pid" in logs.stdout
    stopped = anyclaude("stop")
    assert stopped.returncode == 0 and "stopped fault" in stopped.stdout, stopped
    assert s.wait_exit() == 0
    assert anyclaude("status", "--json").stdout.count('"name"') == 0


def test_serve_without_any_port_free_socket_check_names_the_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{"backends": {"mlx": {"port": 80800}}}')
    result = anyclaude("serve", "--config", str(config), "--mode", "mlx")
    assert result.returncode == 2
    assert "backends.mlx.port: 80800 is not a valid port (1-65535)" in result.stderr


def test_unrunnable_command_fails_at_once(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    backend = {"command": ["/nonexistent/server", "{port}"], "port": free_port()}
    # The proxy gets its own free port: the default (49152) lies in Linux's ephemeral range, where
    # any outgoing connection on the machine may be holding it.
    config.write_text(json.dumps({"port": free_port(), "backends": {"x": backend}}))
    result = anyclaude("serve", "--config", str(config), "--mode", "x", timeout=20)
    assert result.returncode == 1, result.stderr
    assert "Cannot run backend 'x'" in result.stderr


def test_listening_socket_helper_sanity() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        holder = port_holder("127.0.0.1", port)
        assert holder is not None and holder.pid == os.getpid() and holder.listening


def test_a_port_held_by_an_outgoing_connection_names_that_connection() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket() as client:
            # The client's local end is `port`, as an ephemeral port would be; nothing listens on it.
            client.bind(("127.0.0.1", port))
            client.connect(server.getsockname())
            holder = port_holder("127.0.0.1", port)
            assert holder is not None and holder.pid == os.getpid() and not holder.listening
            assert holder.describe().startswith(f"a connection of pid {os.getpid()} (")


# ----------------------------------------------------------------------------- issue 13: what a backend leaves


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_killed_launcher_leaves_nothing_its_backend_started(tmp_path: Path) -> None:
    """A `.sh` serverScript that runs its server without `exec`, a forked worker and a child that called setsid:
    after SIGKILL of the launcher none of them is left, and the next serve gets the port."""
    marker = tmp_path / "tree.marks"
    script = tmp_path / "server.sh"
    script.write_text(
        f'"{sys.executable}" -m tests.fault_backend --port "$PORT" --marker "{marker}" '
        "--grandchild --escaped-grandchild --ignore-sigterm\n"
    )
    port = free_port()
    entry = {"serverScript": str(script), "port": port, "healthInterval": 200, "stopTimeout": 1000}
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "sh", "backends": {"sh": entry}}))
    first = launch_serve(config, "sh", marker, port)
    second: Serve | None = None
    try:
        first.wait_state("READY")
        wait_until(lambda: len(first.marks("GRANDCHILD")) >= 2, 10, what="both grandchildren")
        tree = _tree(first.backend_pid())
        assert len(tree) >= 4, [p.cmdline() for p in tree]  # shell, server, worker, escaped child
        first.proc.kill()
        first.proc.wait()
        for proc in tree:
            wait_until(lambda proc=proc: not alive(proc.pid), 10, what=f"{proc.pid} to be gone")
        second = launch_serve(config, "sh", marker, port)
        second.wait_state("READY")
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_stop_sends_one_sigterm(serve: StartServe) -> None:
    s = serve("--ignore-sigterm", entry={"stopTimeout": 1500})
    s.wait_state("READY")
    s.interrupt()
    assert s.wait_exit(timeout=15) == 0
    assert len(s.marks("SIGTERM-IGNORED")) == 1, s.marks()


def test_state_file_matching_an_unrelated_process_by_pid_and_create_time_never_signals_it() -> None:
    """A forged record may copy a live process's pid and create time; its command line still does not match."""
    stop_spares_a_bystander(argv_hash="0123456789abcdef")
