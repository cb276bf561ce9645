"""The `mlx-server` adapter: config keys become the server's command line, or its embedded settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adapters.base import AdapterError, ApiKind
from adapters.mlx_server.adapter import MlxServerAdapter, server_config
from launcher.config import BackendConfig, Config


def entry(**keys: object) -> BackendConfig:
    return BackendConfig.model_validate({"type": "mlx-server", "model": "/models/qwen", "port": 8081, **keys})


def test_launch_runs_our_module_and_probes_health() -> None:
    spec = MlxServerAdapter().launch("mlx", entry(), Config.model_validate({}))
    assert spec.argv[:3] == (sys.executable, "-m", "adapters.mlx_server")
    assert spec.argv[3:9] == ("--model", "/models/qwen", "--port", "8081", "--host", "127.0.0.1")
    assert spec.base_url == "http://127.0.0.1:8081/v1" and spec.api is ApiKind.OPENAI
    assert spec.readiness is not None and spec.readiness.url == "http://127.0.0.1:8081/health"
    assert spec.liveness == spec.readiness


def test_every_server_key_becomes_a_flag() -> None:
    keys = {
        "modelAlias": "qwen",
        "models": {"small": "~/models/small"},
        "contextLength": 32768,
        "maxQueue": 2,
        "memoryLimit": 12.5,
        "toolParser": "hermes",
        "speculative": "ngram",
        "cpuOnly": True,
        "logLevel": "DEBUG",
        "args": ["--max-tokens", "1024"],
    }
    argv = MlxServerAdapter().launch("mlx", entry(**keys), Config.model_validate({})).argv
    joined = " ".join(argv)
    for expected in (
        "--alias qwen",
        "--extra-model small=~/models/small",
        "--context-length 32768",
        "--max-queue 2",
        "--memory-limit 12.5",
        "--tool-parser hermes",
        "--speculative ngram",
        "--cpu-only",
        "--log-level debug",
    ):
        assert expected in joined
    assert argv[-2:] == ("--max-tokens", "1024")


def test_missing_model_is_an_adapter_error() -> None:
    with pytest.raises(AdapterError, match="model is required"):
        MlxServerAdapter().launch("mlx", BackendConfig.model_validate({"port": 1}), Config.model_validate({}))


def test_embedded_settings_match_the_entry() -> None:
    config = server_config("mlx", entry(models={"small": "/m/small"}, maxQueue=3, memoryLimit=1.0))
    assert [m.alias for m in config.models] == ["qwen", "small"]
    assert config.max_queue == 3 and config.memory_limit_bytes == 1024**3
    assert config.speculative == "off"
    assert server_config("mlx", entry(speculative="ngram")).speculative == "ngram"


def test_an_unknown_speculative_mode_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="speculative"):
        entry(speculative="draft")


def test_an_unknown_tool_parser_fails_the_adapters_check_listing_the_known_ones() -> None:
    from adapters.base import CheckStatus
    from adapters.mlx_server.adapter import tool_parser_check

    bad = tool_parser_check("glm4_moe")
    assert bad.status is CheckStatus.FAIL and bad.fix is not None
    assert "json_tools" in bad.fix and "hermes" in bad.fix
    assert tool_parser_check("json_tools").status is CheckStatus.OK


def test_doctor_says_the_prompt_cache_budgets_the_server_will_choose(tmp_path: Path) -> None:
    from adapters.mlx_server.adapter import cache_budget_check

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    sized = cache_budget_check(entry(model=str(model), cacheDir=str(tmp_path / "cache")))
    assert "RAM" in sized.finding and "machine" in sized.finding and "model weights" in sized.finding
    assert "of" in sized.finding and "free" in sized.finding
    fixed = cache_budget_check(entry(cacheBytes=1 << 30, cacheDiskBytes=2 << 30, cacheDir=str(tmp_path)))
    assert fixed.finding == "prompt cache: RAM 1.0 GiB (cacheBytes); disk 2.0 GiB (cacheDiskBytes)"
    assert "no disk tier" in cache_budget_check(entry(cacheDir="")).finding
    assert "--cache-disk-bytes 5" in " ".join(
        MlxServerAdapter().launch("mlx", entry(cacheDiskBytes=5), Config.model_validate({})).argv
    )
