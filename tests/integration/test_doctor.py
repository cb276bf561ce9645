"""`anyclaude doctor` on real files, sockets and processes: each broken setup gets its own check name,
a fix, and exit code 1; a healthy setup exits 0. The exit-code and JSON contract is driven through
`python -m launcher.doctor`, the rest in-process.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from adapters.base import Check, CheckStatus
from launcher.doctor import render, run_checks
from launcher.paths import Home
from launcher.supervision.ports import free_port
from launcher.supervision.statefile import BackendRecord, process_argv_hash, write_record

SECRET = "sk-doctor-test-secret-0123456789"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A private anyclaude home, as anyclaude itself creates it."""
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket listening on 127.0.0.1 that anyclaude did not open."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def write_config(tmp_path: Path, backends: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps({"backend": next(iter(backends)), "port": free_port(), **top, "backends": backends}))
    return path


def command_backend(port: int, **extra: Any) -> dict[str, Any]:
    argv = [sys.executable, "-m", "tests.fault_backend", "--port", "{port}"]
    return {"type": "command", "command": argv, "port": port, **extra}


def doctor_cli(config: Path | None, home: Home, *args: str, **env_extra: str) -> tuple[int, dict[str, Any]]:
    """Run `python -m launcher.doctor --json` as a user would; print its wall time for the record."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYCLAUDE_")}
    env |= {"ANYCLAUDE_HOME": str(home.root), **env_extra}
    argv = [sys.executable, "-m", "launcher.doctor", "--json", *args]
    if config is not None:
        argv += ["--config", str(config)]
    started = time.perf_counter()
    # Run from the home's parent: no `.anyclauderc.json` of the checkout's can be picked up.
    done = subprocess.run(argv, cwd=home.root.parent, env=env, capture_output=True, text=True, timeout=30)
    print(f"doctor wall time: {time.perf_counter() - started:.2f} s")
    assert done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    assert_well_formed(report["checks"])
    assert report["ok"] is (done.returncode == 0)
    return done.returncode, report


def doctor(config: Path | None, home: Home, tmp_path: Path, mode: str | None = None) -> list[Check]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "ANYCLAUDE_HOME": str(home.root)}
    checks = run_checks(str(config) if config else None, mode, env, home, cwd=tmp_path)
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return checks


def assert_well_formed(rows: list[dict[str, Any]]) -> None:
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), names
    for row in rows:
        assert set(row) == {"name", "status", "finding", "fix"}
        assert row["status"] in ("ok", "warn", "fail") and row["finding"]
        if row["status"] == "fail":
            assert row["fix"], row


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["checks"]}


def find(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def failed(report: dict[str, Any]) -> list[str]:
    return [row["name"] for row in report["checks"] if row["status"] == "fail"]


# ---------------------------------------------------------------------------------------- the CLI contract


def test_healthy_setup_exits_zero(tmp_path: Path, home: Home) -> None:
    (home.logs / "local.log").touch(mode=0o600)
    config = write_config(tmp_path, {"local": command_backend(free_port())})
    code, report = doctor_cli(config, home)
    assert code == 0, failed(report)
    rows = by_name(report)
    assert rows["config.file"]["status"] == "ok" and str(config) in rows["config.file"]["finding"]
    assert rows["config.mode"]["status"] == "ok" and "local" in rows["config.mode"]["finding"]
    assert rows["backend.local.launch"]["status"] == "ok"
    assert rows["backend.local.port"]["status"] == "ok"
    assert rows["home.dirs"]["status"] == rows["home.files"]["status"] == "ok"
    assert {"env.python", "env.platform", "env.mlx-lm", "env.claude", "running", "home.disk"} <= set(rows)


def test_missing_model_path(tmp_path: Path, home: Home) -> None:
    missing = tmp_path / "no-such-model.gguf"
    entry = {"type": "llama-cpp", "binary": sys.executable, "model": str(missing), "port": free_port()}
    code, report = doctor_cli(write_config(tmp_path, {"gguf": entry}), home)
    assert code == 1
    row = by_name(report)["backend.gguf.model"]
    assert row["status"] == "fail" and str(missing) in row["finding"] and "model" in row["fix"]


def test_port_held_by_a_foreign_socket(tmp_path: Path, home: Home, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code, report = doctor_cli(write_config(tmp_path, {"local": command_backend(port)}), home)
    assert code == 1
    row = by_name(report)["backend.local.port"]
    assert row["status"] == "fail" and str(port) in row["finding"]
    assert f"pid {os.getpid()}" in row["finding"] and "port" in row["fix"]


def test_invalid_json_names_line_and_column(tmp_path: Path, home: Home) -> None:
    config = tmp_path / "broken.json"
    config.write_text('{\n  "backend": "local",\n  "backends": {,}\n}\n')
    code, report = doctor_cli(config, home)
    assert code == 1
    row = by_name(report)["config.file"]
    assert row["status"] == "fail" and str(config) in row["finding"] and "line 3 column" in row["finding"]
    assert "JSON" in row["fix"]
    assert by_name(report)["env.python"]["status"] == "ok"  # the machine is still checked


def test_missing_binary(tmp_path: Path, home: Home) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    nowhere = tmp_path / "bin" / "llama-server"
    entry = {"type": "llama-cpp", "binary": str(nowhere), "model": str(model), "port": free_port()}
    code, report = doctor_cli(write_config(tmp_path, {"llama": entry}), home)
    assert code == 1
    assert failed(report) == ["backend.llama.binary"]
    row = by_name(report)["backend.llama.binary"]
    assert str(nowhere) in row["finding"] and "llama.cpp" in row["fix"]


def test_bad_permissions(tmp_path: Path, home: Home) -> None:
    log = home.logs / "local.log"
    log.touch(mode=0o644)
    log.chmod(0o644)
    home.cache.chmod(0o755)
    config = write_config(tmp_path, {"local": command_backend(free_port())})
    code, report = doctor_cli(config, home)
    assert code == 1
    assert sorted(failed(report)) == ["home.dirs", "home.files"]
    rows = by_name(report)
    assert str(home.cache) in rows["home.dirs"]["finding"] and rows["home.dirs"]["fix"] == f"chmod 700 {home.cache}"
    assert str(log) in rows["home.files"]["finding"] and rows["home.files"]["fix"] == f"chmod 600 {log}"


def test_no_config_file_still_checks_the_machine(tmp_path: Path) -> None:
    code, report = doctor_cli(None, Home(tmp_path / "fresh"), "--mode", "whatever", HOME=str(tmp_path))
    rows = by_name(report)
    assert code == 0 and rows["config.file"]["status"] == "warn"
    assert (
        "anyclaude init" in rows["config.file"]["fix"]
    )  # works for an installed anyclaude, which has no example file at hand
    assert rows["env.python"]["status"] == "ok" and "home.dirs" in rows


# ---------------------------------------------------------------------------------------- in-process


def test_unknown_mode_and_unbuildable_launch(tmp_path: Path, home: Home) -> None:
    config = write_config(tmp_path, {"local": command_backend(free_port()), "noport": {"command": ["x"]}})
    checks = doctor(config, home, tmp_path, mode="locl")
    mode = find(checks, "config.mode")
    assert mode.status is CheckStatus.FAIL and "did you mean 'local'" in mode.finding
    launch = find(checks, "backend.noport.launch")
    assert launch.status is CheckStatus.FAIL and "port is required" in launch.finding


def test_port_held_by_our_own_backend_is_fine(tmp_path: Path, home: Home, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    me = psutil.Process()
    # This test process plays both the launcher and the backend: the state file proves both.
    record = BackendRecord(
        name="local", kind="command", state="READY", pid=me.pid, create_time=me.create_time(), port=port
    )
    record.launcher_create_time = me.create_time()
    record.argv_hash = record.launcher_argv_hash = process_argv_hash(me.pid)  # the command line proves it too
    record.breaker = {"state": "closed"}
    write_record(home, record)
    checks = doctor(write_config(tmp_path, {"local": command_backend(port)}), home, tmp_path)
    held = find(checks, "backend.local.port")
    assert held.status is CheckStatus.OK and "anyclaude's own backend 'local'" in held.finding
    assert find(checks, "running.local").status is CheckStatus.OK


@pytest.mark.parametrize(
    ("state", "launcher_alive", "status", "fix"),
    [
        ("FATAL", True, CheckStatus.FAIL, "anyclaude restart gone"),
        ("DEGRADED", True, CheckStatus.WARN, "anyclaude logs gone"),
        ("BACKOFF", True, CheckStatus.WARN, "anyclaude logs gone"),
        ("READY", False, CheckStatus.WARN, "anyclaude stop gone"),  # ORPHANED: its launcher is dead
    ],
)
def test_running_backend_states(
    tmp_path: Path, home: Home, state: str, launcher_alive: bool, status: CheckStatus, fix: str
) -> None:
    me = psutil.Process()
    record = BackendRecord(name="gone", kind="command", state=state, reason="exited with code 3", pid=me.pid)
    record.create_time = me.create_time()
    record.launcher_create_time = me.create_time() if launcher_alive else 1.0
    record.argv_hash = record.launcher_argv_hash = process_argv_hash(me.pid)
    write_record(home, record)
    check = find(doctor(None, home, tmp_path), "running.gone")
    assert check.status is status and check.fix is not None and fix in check.fix
    if state == "FATAL":
        assert "exited with code 3" in check.finding


def test_secrets_are_never_shown(tmp_path: Path, home: Home) -> None:
    remote = {"type": "remote", "baseUrl": "http://10.0.0.9:8000/v1", "apiKey": SECRET}
    config = write_config(tmp_path, {"far": remote}, apiKey=SECRET)
    out = io.StringIO()
    checks = doctor(config, home, tmp_path)
    render(checks, as_json=True, out=out)
    assert SECRET not in out.getvalue()
    assert find(checks, "backend.far.tls").status is CheckStatus.WARN


def test_plain_rendering_groups_sections(tmp_path: Path, home: Home) -> None:
    checks = [
        Check("env.python", CheckStatus.OK, "Python 3"),
        Check("backend.local.port", CheckStatus.FAIL, "port 1 is in use", "pick another port"),
        Check("home.disk", CheckStatus.WARN, "0.5 GiB free", "free some space"),
    ]
    out = io.StringIO()
    assert render(checks, as_json=False, out=out) == 1
    text = out.getvalue()
    assert "Environment\n  ✓ env.python" in text and "Backend local\n  ✗ backend.local.port" in text
    assert "fix: pick another port" in text and "! home.disk" in text
    assert text.rstrip().endswith("1 ok, 1 warning, 1 failed")
    assert render(checks[:1] + checks[2:], as_json=False, out=io.StringIO()) == 0


def test_a_foreign_holders_key_is_masked(tmp_path: Path, home: Home) -> None:
    port = free_port()
    serve = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", serve, "--api-key", SECRET])
    try:
        deadline = time.monotonic() + 10
        while not any(c.laddr and c.laddr.port == port for c in psutil.Process(holder.pid).net_connections()):
            assert time.monotonic() < deadline, "the holder never listened"
            time.sleep(0.02)
        check = find(
            doctor(write_config(tmp_path, {"local": command_backend(port)}), home, tmp_path), "backend.local.port"
        )
    finally:
        holder.kill()
        holder.wait()
    assert check.status is CheckStatus.FAIL and f"pid {holder.pid}" in check.finding
    assert SECRET not in check.finding and "--api-key ***" in check.finding


def test_a_missing_server_script_fails_its_check(tmp_path: Path, home: Home) -> None:
    nowhere = tmp_path / "scripts" / "server.py"
    entry = {"serverScript": str(nowhere), "port": free_port()}
    code, report = doctor_cli(write_config(tmp_path, {"legacy": entry}), home)
    assert code == 1
    row = by_name(report)["backend.legacy.server-script"]
    assert row["status"] == "fail" and str(nowhere) in row["finding"] and "serverScript" in row["fix"]


def test_mlx_textgen_checks_its_wrapper_and_the_venv_that_runs_it(tmp_path: Path, home: Home) -> None:
    from adapters.mlx_textgen import RECIPE, WRAPPER

    # A real venv without MLX-Textgen: the recipe is the fix (once: the same one on Linux and macOS).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    entry = {"type": "mlx-textgen", "model": str(tmp_path), "port": free_port(), "pythonVenv": str(venv)}
    code, report = doctor_cli(write_config(tmp_path, {"tg": entry}), home)
    rows = by_name(report)
    assert code == 1
    assert rows["backend.tg.wrapper"]["status"] == "ok" and str(WRAPPER) in rows["backend.tg.wrapper"]["finding"]
    assert rows["backend.tg.python"]["status"] == "ok"
    package = rows["backend.tg.package"]
    assert package["status"] == "fail" and str(venv) in package["finding"] and package["fix"] == RECIPE
    assert "mlx[cpu]; sys_platform == 'linux'" in RECIPE

    missing = {**entry, "pythonVenv": str(tmp_path / "no-venv")}
    rows = by_name(doctor_cli(write_config(tmp_path, {"tg": missing}), home)[1])
    assert rows["backend.tg.python"]["status"] == "fail"
    assert "backend.tg.package" not in rows  # nothing to ask a Python that is not there


@pytest.mark.skipif(
    not os.environ.get("ANYCLAUDE_TEXTGEN_VENV"), reason="no MLX-Textgen venv ($ANYCLAUDE_TEXTGEN_VENV)"
)
def test_mlx_textgen_installed_by_the_recipe_passes_its_checks(tmp_path: Path, home: Home) -> None:
    venv = os.environ["ANYCLAUDE_TEXTGEN_VENV"]
    entry = {"type": "mlx-textgen", "model": str(tmp_path), "port": free_port(), "pythonVenv": venv}
    rows = by_name(doctor_cli(write_config(tmp_path, {"tg": entry}), home)[1])
    for check in ("wrapper", "python", "package"):
        assert rows[f"backend.tg.{check}"]["status"] == "ok", rows[f"backend.tg.{check}"]
    if sys.platform.startswith("linux"):
        assert "backend.tg.mlx-cpu" not in rows  # present: no finding
