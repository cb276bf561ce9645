"""Rollback by config edit with real processes: docs/reliability.md items 14–16 and `anyclaude rollback`."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from launcher.supervision.ports import free_port
from tests.harness import Serve, alive, anyclaude, fault_command, launch_serve, wait_until


def scripted(port: int, script: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.scripted_backend", "--port", "{port}", "--script", script]
    return {"command": command, "port": port, "healthInterval": 200, "restartDelay": 100, "stopTimeout": 3000}


def answer(s: Serve, timeout: float = 30.0) -> str:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{s.proxy_url}/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=timeout)
    assert reply.status_code == 200, reply.text
    return "".join(block.get("text", "") for block in reply.json()["content"])


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / ".anyclauderc.json"
        self.a, self.b = free_port(), free_port()
        self.data: dict[str, Any] = {
            "port": free_port(),
            "backend": "a",
            "backends": {"a": scripted(self.a, "text"), "b": scripted(self.b, "cached")},
        }
        self.write()

    def write(self, **changes: Any) -> float:
        self.data.update(changes)
        tmp = self.path.with_name(".tmp.json")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)  # as editors do: a whole new file by rename
        return time.monotonic()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Setup, Serve]]:
    config = Setup(tmp_path)
    s = launch_serve(config.path, "a", tmp_path / "marks", config.a)
    try:
        s.wait_state("READY")
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 10)
        yield config, s
    finally:
        s.close()


def test_switching_backend_by_config_edit_keeps_the_proxy(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    assert answer(s) == "Hello world"
    old_pid = s.backend_pid()
    edited = config.write(backend="b")
    wait_until(lambda: "Switched to b" in s.text(), 20, what="the switch")
    switch_time = time.monotonic() - edited
    assert answer(s) == "ok"
    wait_until(lambda: not alive(old_pid), 10, what="the old backend to stop")
    assert s.named("b").state() == "READY"
    print(f"switch time (edit -> new backend serving): {switch_time:.2f} s")


def test_invalid_edit_changes_nothing_and_the_next_valid_one_applies(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    config.path.write_text('{"backend": "b", "backends": {')
    wait_until(lambda: "Config edit not applied" in s.text(), 10)
    assert "invalid JSON" in s.text() and "line 1" in s.text()
    config.path.write_text(json.dumps({**config.data, "backends": {"a": {**config.data["backends"]["a"], "prot": 1}}}))
    wait_until(lambda: "backends.a.prot: unknown key (did you mean 'port'?)" in s.text(), 10)
    assert answer(s) == "Hello world"
    config.write(backend="b")
    wait_until(lambda: "Switched to b" in s.text(), 20)
    assert answer(s) == "ok"


def test_failing_new_backend_leaves_the_old_one_serving(setup: tuple[Setup, Serve], tmp_path: Path) -> None:
    config, s = setup
    broken = {"command": fault_command("--no-listen", "--exit-after", "0.2"), "port": free_port(), "maxRestarts": 0}
    config.write(backend="c", backends={**config.data["backends"], "c": broken})
    wait_until(lambda: "c failed its start; a keeps serving" in s.text(), 20)
    assert answer(s) == "Hello world"
    assert s.state() == "READY"


def test_failing_replacement_on_the_same_port_rolls_back_to_the_old_one(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    entry = {**config.data["backends"]["a"], "command": fault_command("--no-listen", "--exit-after", "0.2")}
    entry["maxRestarts"] = 0
    config.write(backends={**config.data["backends"], "a": entry})
    wait_until(lambda: "rolled back" in s.text(), 30, what="the rollback")
    assert "is serving again" in s.text()
    assert answer(s) == "Hello world"


def test_failing_replacement_rolls_back_after_its_first_failed_start(setup: tuple[Setup, Serve]) -> None:
    """Not after the replacement's whole backoff (1 + 2 + 4 + 8 + 16 s at the defaults)."""
    config, s = setup
    entry = {**config.data["backends"]["a"], "command": fault_command("--no-listen", "--exit-after", "0.2")}
    entry["restartDelay"] = 1000  # the default: a full backoff would take ~31 s
    edited = config.write(backends={**config.data["backends"], "a": entry})
    wait_until(lambda: "rolled back" in s.text(), 12, what="the rollback after the first failed start")
    assert "is serving again" in s.text()
    assert time.monotonic() - edited < 12
    assert answer(s) == "Hello world"


def test_failing_new_backend_is_given_up_after_its_first_failed_start(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    broken = {"command": fault_command("--no-listen", "--exit-after", "0.2"), "port": free_port()}
    config.write(backend="c", backends={**config.data["backends"], "c": broken})
    wait_until(lambda: "c failed its start; a keeps serving" in s.text(), 12, what="the new backend given up")
    assert answer(s) == "Hello world"


@pytest.fixture
def edited(tmp_path: Path) -> Iterator[tuple[Serve, Callable[[str], None]]]:
    """`anyclaude serve` on one fault backend `f`, and a function writing the config anew with other `--model`."""
    marker, port, path = tmp_path / "marks", free_port(), tmp_path / ".anyclauderc.json"
    backend = {"command": fault_command("--marker", str(marker)), "port": port, "healthInterval": 200}
    data: dict[str, Any] = {"port": free_port(), "backend": "f", "backends": {"f": backend}}
    path.write_text(json.dumps(data))

    def write(model: str) -> None:
        path.write_text(json.dumps({**data, "backends": {"f": {**backend, "args": ["--model", model]}}}))

    s = launch_serve(path, "f", marker, port)
    try:
        s.wait_state("READY")
        wait_until(lambda: "Serving the Anthropic API" in s.text(), 10)
        yield s, write
    finally:
        s.close()


def test_burst_of_writes_leads_to_at_most_one_restart(edited: tuple[Serve, Callable[[str], None]]) -> None:
    s, write = edited
    for i in range(6):  # an editor saving in a hurry: several whole writes within a few ms
        write(f"v{i}")
    # Wait until the last version serves; a burst split into two reloads would have started three by then.
    wait_until(lambda: "v5" in _backend_cmdline(s), 20, what="the last written version to run")
    wait_until(lambda: "Switched to f" in s.text(), 10)
    assert len(s.marks("START")) == 2, s.marks("START")
    assert s.text().count("Switched to f") == 1


def test_writes_20_ms_apart_lead_to_one_restart_per_burst(edited: tuple[Serve, Callable[[str], None]]) -> None:
    """An editor (or a script) saving five times, 20 ms apart: one restart, with the last version."""
    s, write = edited
    for burst in range(3):
        for i in range(5):
            write(f"b{burst}v{i}")
            time.sleep(0.02)  # the pace of the burst, not a wait for a result
        wait_until(lambda burst=burst: f"b{burst}v4" in _backend_cmdline(s), 20, what=f"burst {burst} applied")
        wait_until(lambda burst=burst: s.text().count("Switched to f") == burst + 1, 10, what="the switch line")
        assert len(s.marks("START")) == burst + 2, (burst, s.marks("START"))


def test_rollback_command_restores_the_previous_config(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    config.write(backend="b")
    wait_until(lambda: "Switched to b" in s.text(), 20)
    history = anyclaude("config", "history")
    assert history.stdout.count("\n") >= 2, history.stdout
    result = anyclaude("rollback", "--config", str(config.path))
    assert result.returncode == 0, result.stderr
    assert json.loads(config.path.read_text())["backend"] == "a"
    wait_until(lambda: s.text().count("Switched to") >= 2, 20, what="the rollback to be applied")
    assert answer(s) == "Hello world"


def _backend_cmdline(s: Serve) -> str:
    record = s.record()
    if not record or not record.get("pid") or record.get("state") != "READY":
        return ""
    try:
        return " ".join(psutil.Process(record["pid"]).cmdline())
    except psutil.Error:
        return ""


# ----------------------------------------------------------------------------- issue 13.1: switching under load


class Streams:
    """One streamed request per prompt, all at once, each in a thread; `results` holds each reply's text
    or its failure once `join` returns."""

    def __init__(self, url: str, prompts: list[str]) -> None:
        import threading

        self.url = url
        self.results: list[str | BaseException] = [RuntimeError("did not finish")] * len(prompts)
        self.threads = [threading.Thread(target=self._one, args=(i, p)) for i, p in enumerate(prompts)]
        for thread in self.threads:
            thread.start()

    def _one(self, i: int, prompt: str) -> None:
        import anthropic

        c = anthropic.Anthropic(base_url=self.url, api_key="k", max_retries=0, timeout=60)
        try:
            with c.messages.stream(
                model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": prompt}]
            ) as stream:
                self.results[i] = stream.get_final_text()
        except Exception as exc:  # the result the test looks at
            self.results[i] = exc

    def join(self) -> list[str | BaseException]:
        for thread in self.threads:
            thread.join(60)
        return self.results


def held(port: int, release: Path, **extra: Any) -> dict[str, Any]:
    entry = scripted(port, "held")
    # --exit-on-sigterm: a stop cuts its streams, so only a drain lets them finish.
    entry["command"] = [*entry["command"], "--release", str(release), "--exit-on-sigterm"]
    return {**entry, **extra}


def test_switch_drains_running_requests_and_blames_only_the_backend_that_served(tmp_path: Path) -> None:
    """10 streams on a when the config switches to b: they finish on a, new requests go to b at once,
    a stops after the last one, and the failures among them are charged to a, never to b."""
    release = tmp_path / "release"
    path = tmp_path / ".anyclauderc.json"
    a, b = free_port(), free_port()
    data: dict[str, Any] = {
        "port": free_port(),
        "backend": "a",
        "backends": {"a": held(a, release), "b": {**scripted(b, "cached"), "breakerFailures": 1}},
    }
    path.write_text(json.dumps(data))
    s = launch_serve(path, "a", tmp_path / "marks", a)
    try:
        s.wait_state("READY")
        old_pid = s.backend_pid()
        prompts = ["hold on"] * 8 + ["[script:held_fail] hold on"] * 2
        streams = Streams(s.proxy_url, prompts)
        stats = f"http://127.0.0.1:{a}/_stats"
        wait_until(lambda: httpx.get(stats).json()["active"] == 10, 20, what="10 streams running on a")
        path.write_text(json.dumps({**data, "backend": "b"}))
        wait_until(lambda: "Switched to b" in s.text(), 20, what="the switch")
        assert answer(s) == "ok", "new requests go to b at once"
        assert alive(old_pid), "a must keep serving its running requests"
        release.touch()
        results = streams.join()
        texts = [r for r in results if isinstance(r, str)]
        assert texts == ["partial Hello world"] * 8, results
        wait_until(lambda: not alive(old_pid), 10, what="a to stop once drained")
        assert answer(s) == "ok", "a's failures must not open b's breaker"
        record = s.named("b").record()
        assert record is not None and record["breaker"]["failures"] == 0, record
    finally:
        release.touch()
        s.close()


@contextlib.contextmanager
def serving_held_streams(tmp_path: Path, count: int) -> Iterator[tuple[Serve, Streams, Path]]:
    """`serve` on a backend that holds every stream until `release` exists, with `count` streams running."""
    release = tmp_path / "release"
    port = free_port()
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps({"port": free_port(), "backend": "a", "backends": {"a": held(port, release)}}))
    s = launch_serve(path, "a", tmp_path / "marks", port)
    try:
        s.wait_state("READY")
        streams = Streams(s.proxy_url, ["hold on"] * count)
        stats = f"http://127.0.0.1:{port}/_stats"
        wait_until(lambda: httpx.get(stats).json()["active"] == count, 20, what="streams")
        yield s, streams, release
    finally:
        release.touch()
        s.close()


def test_ctrl_c_under_serve_lets_running_requests_finish(tmp_path: Path) -> None:
    with serving_held_streams(tmp_path, 3) as (s, streams, release):
        backend = s.backend_pid()
        s.interrupt()
        wait_until(lambda: "stopping" in s.text(), 10, what="the first Ctrl-C to be seen")
        assert s.proc.poll() is None and alive(backend), "running requests must be let finish"
        release.touch()
        results = streams.join()
        assert results == ["partial Hello world"] * 3, results
        assert s.wait_exit(timeout=20) == 0


def test_edit_to_a_missing_model_is_refused_at_once_and_the_old_backend_keeps_serving(
    setup: tuple[Setup, Serve], tmp_path: Path
) -> None:
    config, s = setup
    missing = tmp_path / "gone-model"
    broken = {"type": "mlx-server", "model": str(missing), "port": free_port()}
    config.write(backend="m", backends={**config.data["backends"], "m": broken})
    wait_until(lambda: "Config not applied" in s.text(), 10, what="the refusal")
    assert "backends.m.model" in s.text() and str(missing) in s.text()
    assert "Starting m" not in s.text(), "nothing may be started for a model that is not there"
    assert answer(s) == "Hello world"


def test_a_second_ctrl_c_cuts_the_drain(tmp_path: Path) -> None:
    with serving_held_streams(tmp_path, 2) as (s, streams, _release):
        s.interrupt()
        wait_until(lambda: "press Ctrl-C again" in s.text(), 10)
        started = time.monotonic()
        s.interrupt()
        assert s.wait_exit(timeout=20) == 0
        assert time.monotonic() - started < 10, "a second Ctrl-C must not wait for the running requests"
        results = streams.join()
        assert all(isinstance(r, BaseException) or r != "partial Hello world" for r in results), results


def test_a_description_edit_applies_live_and_the_backend_keeps_its_pid(setup: tuple[Setup, Serve]) -> None:
    config, s = setup
    pid = s.backend_pid()
    entry = {**config.data["backends"]["a"], "description": "edited", "maxOutputTokens": 8, "breakerFailures": 2}
    config.write(backends={**config.data["backends"], "a": entry})
    wait_until(lambda: "Config applied without a restart" in s.text(), 20, what="the edit to apply")
    assert answer(s) == "Hello world"
    assert s.backend_pid() == pid, "a description, output cap or breaker edit must not restart the backend"
    sent = httpx.get(f"http://127.0.0.1:{config.a}/_last", timeout=5).json()
    assert sent["max_tokens"] == 8, "the live key reaches the proxy at once"


def test_a_stream_keeps_flowing_while_a_slow_version_probe_runs(setup: tuple[Setup, Serve], tmp_path: Path) -> None:
    """The pre-start checks of a config edit (here `binary --version`, 1.5 s) run off the proxy's event loop."""
    config, s = setup
    marks = tmp_path / "probe"
    help_text = Path(__file__).parent.parent / "fixtures" / "mistralrs" / "serve-cli-help.txt"
    binary = tmp_path / "mistralrs"
    binary.write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f'  --version) touch {marks}.start; sleep 1.5; echo "mistralrs 0.6.0"; touch {marks}.end ;;\n'
        f"  --help) cat {help_text} ;;\n"
        "  *) exec sleep 30 ;;\n"
        "esac\n"
    )
    binary.chmod(0o755)
    (tmp_path / "model").mkdir()
    slow = {"type": "mistralrs", "binary": str(binary), "model": str(tmp_path / "model"), "port": free_port()}
    config.write(backends={**config.data["backends"], "m": {**slow, "startupTimeout": 1000}})
    wait_until(lambda: "Config applied" in s.text(), 20, what="the new entry to be read")
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "hi [script:ticks]"}],
    }
    arrivals: list[float] = []
    headers = {"x-api-key": "k"}
    with httpx.stream("POST", f"{s.proxy_url}/v1/messages", json=body, headers=headers, timeout=30) as reply:
        for line in reply.iter_lines():
            if line.startswith("event: content_block_delta"):
                arrivals.append(time.time())  # wall clock: compared with the probe's file times
                if len(arrivals) == 5:
                    config.write(backend="m")  # its checks run `mistralrs --version` while the stream goes on
    assert len(arrivals) > 150, f"{len(arrivals)} deltas arrived"
    probe_start = Path(f"{marks}.start").stat().st_mtime
    probe_end = Path(f"{marks}.end").stat().st_mtime
    assert arrivals[0] < probe_start and probe_end < arrivals[-1], "the probe must run while the stream does"
    during = [t for t in arrivals if probe_start - 0.05 <= t <= probe_end + 0.05]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert len(during) > 40 and max(gaps) < 0.1, f"largest gap while the probe ran: {max(gaps) * 1000:.0f} ms"
