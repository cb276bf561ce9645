"""Secrets never leave the file they were written in (docs/reliability.md 27): not into `config show`, not into
config history; a rollback still writes back a working config, its keys taken from the current file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launcher.config import load_settings
from launcher.history import history_dir, record_applied, rollback
from launcher.paths import Home
from tests.harness import anyclaude

PROXY_KEY = "proxy-key-5f1c9e0b2a7d4e3f"
BACKEND_KEY = "sk-or-v1-literal-8d0c2f6a1b9e"
ENV_KEY = "sk-env-literal-3a7b9c1d2e4f"
FLAG_KEY = "sk-flag-literal-6e5d4c3b2a19"
EXPANDED = "sk-from-the-environment-77aa"
SECRETS = (PROXY_KEY, BACKEND_KEY, ENV_KEY, FLAG_KEY, EXPANDED)


def config_data(model: str = "m1") -> dict[str, Any]:
    return {
        "backend": "remote",
        "apiKey": PROXY_KEY,
        "backends": {
            "remote": {
                "type": "remote",
                "baseUrl": "https://openrouter.ai/api/v1",
                "apiKey": BACKEND_KEY,
                "model": model,
            },
            "local": {
                "command": ["server", "--port", "{port}", "--api-key", FLAG_KEY],
                "port": 8099,
                "env": {"OPENAI_API_KEY": ENV_KEY, "HF_TOKEN": "${ANYCLAUDE_TEST_SECRET}", "LOG_LEVEL": "debug"},
            },
        },
    }


def test_config_show_masks_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ".anyclauderc.json"
    path.write_text(json.dumps(config_data()))
    result = anyclaude("config", "show", "--config", str(path), env={"ANYCLAUDE_TEST_SECRET": EXPANDED})
    assert result.returncode == 0, result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout, secret
    shown = json.loads(result.stdout)["config"]["backends"]["local"]
    assert shown["env"]["LOG_LEVEL"] == "debug", "values that are not secret stay readable"


def test_history_keeps_no_secret_and_rollback_restores_them_from_the_current_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYCLAUDE_TEST_SECRET", EXPANDED)
    path = tmp_path / ".anyclauderc.json"
    home = Home.from_env()
    path.write_text(json.dumps(config_data("m1"), indent=2))
    assert record_applied(load_settings(path)) is not None
    path.write_text(json.dumps(config_data("m2"), indent=2))
    assert record_applied(load_settings(path)) is not None

    kept = list(history_dir(home).glob("*.json"))
    assert len(kept) == 2
    for file in kept:
        text = file.read_text()
        for secret in SECRETS:
            assert secret not in text, (file.name, secret)
        assert "${ANYCLAUDE_TEST_SECRET}" in text, "a ${VAR} reference is no secret and is kept as written"

    rollback(home, path, 1)
    restored = json.loads(path.read_text())
    assert restored == config_data("m1"), "the rolled-back file must be the working config, keys included"
    load_settings(path)  # and it validates


def test_rollback_names_the_field_when_the_current_file_has_no_key_to_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher.errors import AnyclaudeError

    path = tmp_path / ".anyclauderc.json"
    home = Home.from_env()
    path.write_text(json.dumps(config_data("m1")))
    record_applied(load_settings(path))
    without = config_data("m2")
    del without["backends"]["remote"]["apiKey"]
    path.write_text(json.dumps(without))
    record_applied(load_settings(path))
    with pytest.raises(AnyclaudeError) as info:
        rollback(home, path, 1)
    assert "backends.remote.apiKey" in info.value.message
    assert json.loads(path.read_text()) == without, "nothing is written when a key cannot be restored"
