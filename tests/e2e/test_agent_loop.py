"""Claude Code's agent loop on a real model that calls tools: the real CLI through `anyclaude`, our MLX server,
Qwen2.5-Coder-1.5B-Instruct (imported from its GGUF with the tool-call fixes), greedy decoding.

Each outcome is read from the file system, from what a command really printed, or from the request log, never
from what the model says it did. Claude Code runs with anyclaude's defaults for a small model (Read, Edit and
Bash, the compact system prompt); only tool permissions are given (`-p` cannot ask for them). The tasks here are
the ones the model did every time in bench/agent.py; the rest stay in the bench. The fixture makes a one-line fix
every time seen but may not stop by itself after it (it runs the test, then tries the Edit again), so the edit
test lets Claude Code's turn limit end the run and judges the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.supervision.ports import free_port
from tests.agent_tasks import BY_NAME, SETTINGS_TEST, Run, prepare, request_rows, run_claude
from tests.conftest import TAG
from tests.harness import Serve, launch_serve, wait_until

Agent = tuple[Path, Serve]  # the config and the running `anyclaude serve`

pytestmark = [
    pytest.mark.slow,
    pytest.mark.claude,
    pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code (`claude`) is not on PATH"),
    pytest.mark.timeout(1800),
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """`anyclaude serve` on the tool-calling model, shared by the tests of this module (the model loads once)."""
    from tests.qwen_coder import qwen_coder_dir

    model = qwen_coder_dir()
    folder = tmp_path_factory.mktemp("agent")
    port = free_port()
    entry: dict[str, Any] = {"type": "mlx-server", "port": port, "model": str(model), "temperature": 0.0}
    entry["maxOutputTokens"] = 1024  # a reply that rambles ends within minutes on a CPU
    entry["startupTimeout"] = 900_000
    config = folder / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": "qwen", "backends": {"qwen": entry}}))
    # Its own tag and home: the per-test leak check must not take the shared server for a leak, and the runs
    # below find it (and its request log) through that home.
    home = folder / "anyclaude-home"
    serve = launch_serve(
        config, "qwen", folder / "marks", port, env={TAG: uuid.uuid4().hex, "ANYCLAUDE_HOME": str(home)}
    )
    try:
        serve.wait_state("READY", timeout=900)
        wait_until(lambda: "Serving the Anthropic API" in serve.text(), 30)
        yield config, serve
    finally:
        serve.close()


def run_task(agent: Agent, name: str, tmp_path: Path, *extra: str) -> tuple[Path, Run]:
    config, _ = agent
    task = BY_NAME[name]
    folder = prepare(task, tmp_path / "work")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    run = run_claude(config, folder, task.prompt, home=home, anyclaude_home=agent[1].home, extra=extra)
    assert run.exit_code == 0 and not run.is_error, f"{run.answer!r}\n{run.stderr[-2000:]}"
    return folder, run


def test_claude_code_reads_a_file_and_answers_with_a_word_only_it_holds(agent: Agent, tmp_path: Path) -> None:
    _, run = run_task(agent, "read", tmp_path)

    assert "marmalade" in run.answer.lower(), run.answer
    assert run.calls_made >= 1 and run.calls_failed == 0
    assert not any(r["tool_parse_failed"] for r in run.requests)


def test_claude_code_runs_a_command_and_reports_its_output(agent: Agent, tmp_path: Path) -> None:
    folder, run = run_task(agent, "bash-count", tmp_path)

    counted = subprocess.run(["wc", "-l", "data.csv"], cwd=folder, capture_output=True, text=True, check=True)
    assert counted.stdout.split()[0] in run.answer, run.answer


def test_claude_code_edits_a_file_so_that_its_test_passes(agent: Agent, tmp_path: Path) -> None:
    task = BY_NAME["edit-flag"]
    folder = prepare(task, tmp_path / "work")
    (tmp_path / "home").mkdir()
    # Three turns: the fixture reads and edits (at times it tries the Edit first and is told to read), then may go
    # on; Claude Code stops there if the model has not.
    run = run_claude(agent[0], folder, task.prompt, home=tmp_path / "home", anyclaude_home=agent[1].home, max_turns=3)

    assert run.exit_code == 0 or run.subtype == "error_max_turns", f"{run.subtype} {run.stderr[-2000:]}"
    tested = subprocess.run(
        [sys.executable, "test_settings.py"], cwd=folder, capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0 and tested.stdout.strip() == "ok", tested.stderr
    assert (folder / "test_settings.py").read_text() == SETTINGS_TEST  # the code was fixed, not the test
    edits = [c for c in run.calls if c["name"] == "Edit" and c["input"]["file_path"] == str(folder / "settings.py")]
    assert any(edit.get("error") is False for edit in edits), run.calls  # an Edit Claude Code carried out
    assert not any(r["tool_parse_failed"] for r in run.requests)


def test_a_second_turn_reuses_the_first_turns_cache(agent: Agent, tmp_path: Path) -> None:
    folder, first = run_task(agent, "read", tmp_path)
    home = tmp_path / "home"
    second = run_claude(
        agent[0],
        folder,
        "And what is the first word of notes.txt? Answer with the word only.",
        home=home,
        anyclaude_home=agent[1].home,
        extra=("--continue",),
    )

    assert second.exit_code == 0 and not second.is_error, second.stderr[-2000:]
    assert first.requests and second.requests
    last_of_first = first.requests[-1]
    opening = second.requests[0]
    # The second turn's prompt holds the whole first conversation; the cache serves all of it. (The request log's
    # input_tokens are the prompt tokens not served from the cache, as in the Messages API's usage.)
    first_prompt = last_of_first["input_tokens"] + (last_of_first["cached_tokens"] or 0)
    assert opening["cached_tokens"] >= first_prompt, (opening, last_of_first)
    assert opening["input_tokens"] < first_prompt / 4
    assert request_rows(agent[1].home, since=0)
