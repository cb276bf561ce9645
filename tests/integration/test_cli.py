"""The `anyclaude` command line as a person runs it: exit codes, dry runs, init, models import, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import __version__
from launcher.supervision.ports import free_port
from tests.harness import ROOT, anyclaude
from tests.integration.test_gguf_import import (
    bpe_tokenizer_meta,
    hf_weights,
    model_meta,
    write_float_gguf,
)

EXAMPLE = ROOT / ".anyclauderc.example.json"


def test_version() -> None:
    result = anyclaude("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_the_example_config_is_well_formed_and_its_missing_model_is_said() -> None:
    """The example parses and launches; its placeholder model folder does not exist here, said as doctor says it."""
    result = anyclaude("config", "validate", "--config", str(EXAMPLE))
    assert result.returncode == 1, result.stderr
    assert "backend.mlx.model" in result.stderr and "does not exist" in result.stderr
    assert "fix: Point it at a model folder" in result.stderr


def test_config_validate_checks_paths_scripts_and_ports_without_starting_anything(tmp_path: Path) -> None:
    import socket

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        config = tmp_path / ".anyclauderc.json"
        good = {"type": "mlx-server", "model": str(model), "port": free_port()}
        config.write_text(json.dumps({"port": free_port(), "backend": "mlx", "backends": {"mlx": good}}))
        ok = anyclaude("config", "validate", "--config", str(config))
        assert ok.returncode == 0, ok.stderr
        assert "valid (1 backends, 1 enabled; mode mlx)" in ok.stdout
        script = {"serverScript": str(tmp_path / "gone.py"), "port": taken}
        config.write_text(json.dumps({"port": free_port(), "backend": "legacy", "backends": {"legacy": script}}))
        bad = anyclaude("config", "validate", "--config", str(config))
        assert bad.returncode == 1
        assert "backend.legacy.server-script" in bad.stderr and "gone.py" in bad.stderr, bad.stderr
        assert f"port {taken} on 127.0.0.1 is in use" in bad.stderr, bad.stderr
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mlx", "-m adapters.mlx_server --model"),
        ("mlx-legacy", "scripts/mlx-server.py --port 8082"),
        ("mlx-lm", "-m mlx_lm server --model"),
        ("mlx-textgen", "mlx-textgen-server.sh -m"),
        ("llama-cpp", "--jinja"),
        ("lmstudio", "(nothing is started for this kind)"),
        ("claude", "(nothing is started for this kind)"),
    ],
)
def test_dry_run_prints_what_each_kind_would_run(mode: str, expected: str) -> None:
    result = anyclaude("serve", "--dry-run", "--config", str(EXAMPLE), "--mode", mode)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "health:" in result.stdout and "api:" in result.stdout


def test_dry_run_never_shows_a_key(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    entry = {"baseUrl": "https://example.invalid/v1", "apiKey": "${TEST_KEY}", "env": {"HF_TOKEN": "hf_secret_value"}}
    config.write_text(json.dumps({"backends": {"openrouter": entry}}))
    result = anyclaude(
        "serve", "--dry-run", "--config", str(config), "--mode", "openrouter", env={"TEST_KEY": "sk-live-12345"}
    )
    assert result.returncode == 0, result.stderr
    assert "sk-live-12345" not in result.stdout and "hf_secret_value" not in result.stdout
    shown = anyclaude(
        "config", "show", "--config", str(config), "--mode", "openrouter", env={"TEST_KEY": "sk-live-12345"}
    )
    assert "sk-live-12345" not in shown.stdout and shown.returncode == 0


def test_config_errors_exit_2_and_name_the_field(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"backends": {"mlx": {"prot": 8081}}}')
    result = anyclaude("config", "validate", "--config", str(config))
    assert result.returncode == 2
    assert "backends.mlx.prot: unknown key (did you mean 'port'?)" in result.stderr


def test_schema_is_json_schema() -> None:
    schema = json.loads(anyclaude("config", "schema").stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "backends" in schema["properties"]


def test_init_writes_a_starter_config_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    def init(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher", "init", *args], cwd=tmp_path, capture_output=True, text=True
        )

    first = init()
    assert first.returncode == 0, first.stderr
    written = tmp_path / ".anyclauderc.json"
    data = json.loads(written.read_text())
    assert Path(data["backends"]["mlx-legacy"]["serverScript"]).is_file()  # absolute, usable from any folder
    checked = anyclaude("config", "validate", "--config", str(written))
    assert checked.returncode == 1 and "backend.mlx.model" in checked.stderr  # well formed; the model is yours to set
    again = init()
    assert again.returncode == 1 and "exists already" in again.stderr
    assert init("--force").returncode == 0


def test_models_import_converts_a_gguf(tmp_path: Path) -> None:
    meta = model_meta(bpe_tokenizer_meta())
    vocab = len(meta["tokenizer.ggml.tokens"])
    gguf = tmp_path / "tiny.gguf"
    write_float_gguf(gguf, hf_weights(vocab, tied=True), meta)
    result = anyclaude("models", "import", str(gguf), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "config.json").is_file()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    refused = anyclaude("models", "import", str(bad), str(tmp_path / "out2"))
    assert refused.returncode == 1 and "bad.gguf" in refused.stderr


def test_a_mistyped_subcommand_exits_2_with_did_you_mean(tmp_path: Path) -> None:
    # A config whose backend cannot start: before the check, the typo started the main command.
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"backend": "x", "backends": {"x": {"command": ["false"], "port": 9}}}))
    result = anyclaude("stauts", env={"ANYCLAUDE_CONFIG": str(config)}, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "did you mean `status`?" in result.stderr
