"""mistral.rs: telling its two command lines apart, and the argv each one gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base import AdapterError, Probe
from adapters.mistralrs import MistralrsAdapter, cli_of, detect_cli, subcommands
from launcher.config import parse_config_text

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mistralrs"
SERVE_HELP = (FIXTURES / "serve-cli-help.txt").read_text()
LEGACY_HELP = (FIXTURES / "legacy-server-help.txt").read_text()


def test_fixtures_list_their_subcommands() -> None:
    assert {"serve", "run", "help"} <= subcommands(SERVE_HELP)
    assert {"plain", "gguf", "help"} <= subcommands(LEGACY_HELP)
    assert "--serve-ip" not in subcommands(LEGACY_HELP)


def test_detects_each_cli_from_its_help() -> None:
    assert detect_cli(SERVE_HELP) == "serve"
    assert detect_cli(LEGACY_HELP) == "legacy"


def test_unrecognised_help_reads_as_the_current_cli() -> None:
    assert detect_cli("error: something went wrong") == "serve"


def test_no_help_at_all_falls_back_to_the_binary_name() -> None:
    assert cli_of("/opt/bin/mistralrs-server", read=lambda _: "") == "legacy"
    assert cli_of("/opt/bin/mistralrs", read=lambda _: "") == "serve"


def launch_argv(tmp_path: Path, help_text: str, model: str, name: str = "mistralrs") -> tuple[str, ...]:
    binary = tmp_path / name
    binary.write_text("")
    entry = {"port": 1234, "model": model, "binary": str(binary), "args": ["--max-seqs", "4"]}
    cfg = parse_config_text(json.dumps({"backends": {"m": entry}}), Path("x.json"), env={})
    asked: list[str] = []

    def read(path: str) -> str:
        asked.append(path)
        return help_text

    spec = MistralrsAdapter(read=read).launch("m", cfg.backends["m"], cfg)
    assert asked == [str(binary)]
    assert spec.readiness == Probe("http://127.0.0.1:1234/health")
    return tuple(arg.replace(str(binary), "BIN") for arg in spec.argv)


def test_serve_cli_argv(tmp_path: Path) -> None:
    assert launch_argv(tmp_path, SERVE_HELP, "/models/qwen") == (
        *("BIN", "serve", "-m", "/models/qwen", "-p", "1234", "--host", "127.0.0.1"),
        *("--max-seqs", "4"),
    )


def test_serve_cli_gguf_argv(tmp_path: Path) -> None:
    assert launch_argv(tmp_path, SERVE_HELP, "/g/smol-q8.gguf")[:8] == (
        *("BIN", "serve", "-m", "/g", "-f", "smol-q8.gguf", "-p", "1234"),
    )


def test_legacy_cli_argv(tmp_path: Path) -> None:
    assert launch_argv(tmp_path, LEGACY_HELP, "/models/qwen", "mistralrs-server") == (
        *("BIN", "--serve-ip", "127.0.0.1", "--port", "1234", "--token-source", "none"),
        *("plain", "-m", "/models/qwen", "--max-seqs", "4"),
    )


def test_legacy_cli_gguf_argv(tmp_path: Path) -> None:
    assert launch_argv(tmp_path, LEGACY_HELP, "/g/smol-q8.gguf", "mistralrs-server")[7:] == (
        *("gguf", "-m", "/g", "-f", "smol-q8.gguf", "--max-seqs", "4"),
    )


def test_missing_binary_names_the_field() -> None:
    entry = {"port": 1234, "model": "/m", "binary": "/nowhere/mistralrs"}
    cfg = parse_config_text(json.dumps({"backends": {"m": entry}}), Path("x.json"), env={})
    with pytest.raises(AdapterError, match=r"backends\.m\.binary"):
        MistralrsAdapter(read=lambda _: SERVE_HELP).launch("m", cfg.backends["m"], cfg)
