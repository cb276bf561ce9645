"""Prompt-cache settings from the launcher's keys to the server's flags, and the server's own defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.mlx_server.__main__ import build_parser, config_from_args
from adapters.mlx_server.adapter import MlxServerAdapter, server_config
from adapters.mlx_server.cache_warmup import read_warmup
from adapters.mlx_server.config import DEFAULT_CACHE_SLOTS
from launcher.config import BackendConfig, Config


def entry(**keys: object) -> BackendConfig:
    return BackendConfig.model_validate({"type": "mlx-server", "model": "/models/qwen", "port": 8081, **keys})


def test_cache_keys_become_flags_only_when_set() -> None:
    plain = " ".join(MlxServerAdapter().launch("mlx", entry(), Config.model_validate({})).argv)
    assert "--cache" not in plain and "--warmup" not in plain
    keys = {
        "cacheSlots": 3,
        "cacheBytes": 1 << 30,
        "cacheDir": "/var/cache/anyclaude",
        "cachePersistInterval": 30,
        "warmupFile": "/prompts/system.txt",
        "warmupTools": "/prompts/tools.json",
    }
    argv = " ".join(MlxServerAdapter().launch("mlx", entry(**keys), Config.model_validate({})).argv)
    for flag in (
        "--cache-slots 3",
        f"--cache-bytes {1 << 30}",
        "--cache-dir /var/cache/anyclaude",
        "--cache-persist-interval 30",
        "--warmup-file /prompts/system.txt",
        "--warmup-tools /prompts/tools.json",
    ):
        assert flag in argv


def test_embedded_server_saves_caches_only_with_a_cache_dir() -> None:
    assert server_config("mlx", entry()).cache_dir is None
    settings = server_config("mlx", entry(cacheDir="/tmp/c", cacheSlots=2))
    assert settings.cache_dir == Path("/tmp/c") and settings.cache_slots == 2


def test_server_cache_dir_defaults_to_anyclaude_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANYCLAUDE_HOME", str(tmp_path))
    config = config_from_args(build_parser().parse_args(["--model", "/m"]))
    assert config.cache_dir == tmp_path / "cache" and config.cache_slots == DEFAULT_CACHE_SLOTS
    monkeypatch.delenv("ANYCLAUDE_HOME")
    assert config_from_args(build_parser().parse_args(["--model", "/m"])).cache_dir == (
        Path.home() / ".anyclaude" / "cache"
    )
    assert config_from_args(build_parser().parse_args(["--model", "/m", "--cache-dir", ""])).cache_dir is None


def test_warmup_files(tmp_path: Path) -> None:
    assert read_warmup(None, None) is None
    text = tmp_path / "system.md"
    text.write_text("Be brief.")
    assert read_warmup(text, None).messages == [{"role": "system", "content": "Be brief."}]  # type: ignore[union-attr]
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "read"}}]))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"messages": [{"role": "system", "content": "x"}]}))
    warmup = read_warmup(request, tools)
    assert warmup is not None and warmup.tools and warmup.messages[0]["content"] == "x"
    tools.write_text("{}")
    with pytest.raises(ValueError, match="list of tool objects"):
        read_warmup(text, tools)
    with pytest.raises(ValueError, match="warmup file"):
        read_warmup(tmp_path / "missing.txt", None)
