"""Small things a person meets at the command line: `status` piped, its tools column, the exit codes of
config errors, a mistyped option of anyclaude's own, and what the top-level `--help` shows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Serve, anyclaude, serves, start_serve, wait_until

StartServe = Callable[..., Serve]
LONG_NAME = "a-backend-whose-name-alone-takes-half-of-an-eighty-column-line"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name=LONG_NAME, **kwargs)) as start:
        yield start


def test_status_piped_is_plain_text_at_full_width_and_says_no_for_a_model_without_tools(
    serve: StartServe, tmp_path: Path
) -> None:
    model = tmp_path / "NoTemplate-Model"  # no chat template: tool definitions never reach the model
    model.mkdir()
    (model / "config.json").write_text("{}")
    s = serve({"model": str(model)})
    s.wait_state("READY")

    shown = anyclaude("status")  # stdout is a pipe here
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["backend", "kind", "state", "pid", "port", "restarts", "breaker", "tools", "reason"]
    row = next(line for line in lines if line.startswith(LONG_NAME))
    cells = row.split()
    assert cells[2] == "READY" and cells[7] == "no", row
    assert row.endswith(s.record()["reason"]), row  # type: ignore[index]
    assert len(row) > 80 and "…" not in shown.stdout, shown.stdout
    assert not any(ch in shown.stdout for ch in "┃━┏│─"), shown.stdout
    assert f"{LONG_NAME} cannot call tools: it has no chat template" in shown.stdout

    # An edit that breaks the config: the launcher keeps running what it had, and so does what status says.
    config = tmp_path / ".anyclauderc.json"
    config.write_text(config.read_text() + "}")
    wait_until(lambda: "not applied" in s.text().lower() or "Config error" in s.text(), 15, what="the bad edit")
    after = anyclaude("status")
    row = next(line for line in after.stdout.splitlines() if line.startswith(LONG_NAME))
    assert row.split()[7] == "no", after.stdout
    listed = json.loads(anyclaude("status", "--json").stdout)["backends"]
    assert listed[0]["can_call_tools"] is False, listed


def test_config_errors_exit_2(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}  # no ~/.anyclauderc.json, and none in the folder it runs in
    for args in (("config", "path"), ("rollback",)):
        result = anyclaude(*args, env=env)
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert "No config file" in result.stderr, result.stderr
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"backend": "x", "backends": {"x": {"command": ["false"], "port": 9}}}))
    result = anyclaude("rollback", "5", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "There is no config snapshot #5" in result.stderr


def test_a_mistyped_option_exits_2_with_the_one_meant_and_starts_nothing(tmp_path: Path) -> None:
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"backend": "x", "backends": {"x": {"command": ["false"], "port": 9}}}))
    result = anyclaude("--mod", "x", env={"ANYCLAUDE_CONFIG": str(config)}, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "did you mean `--mode`?" in result.stderr
    assert "Starting" not in result.stdout + result.stderr


def test_top_level_help_shows_mode_and_config() -> None:
    shown = anyclaude("--help")
    assert shown.returncode == 0
    assert "--mode NAME" in shown.stdout and "--config PATH" in shown.stdout, shown.stdout


def test_status_asks_our_mlx_server_about_a_model_named_by_its_hugging_face_id(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The config names a Hugging Face id; only the server, which found it in the cache, knows the model."""
    from tests.integration.test_tools_notice import without_tools

    cache = tmp_path / "hf"
    repo = cache / "models--local--NoTools-Model"
    shutil.copytree(without_tools(tiny_model, tmp_path), repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    entry = {"command": None, "type": "mlx-server", "model": "local/NoTools-Model"}
    s = start_serve(tmp_path, entry=entry, name="mlx", env={"HF_HUB_CACHE": str(cache)})
    try:
        s.wait_state("READY", timeout=120)
        shown = anyclaude("status")
        row = next(line for line in shown.stdout.splitlines() if line.startswith("mlx "))
        assert row.split()[7] == "no", shown.stdout
        assert "mlx cannot call tools: its chat template drops tool definitions" in shown.stdout
    finally:
        s.close()
