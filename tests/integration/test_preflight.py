"""Before spawning, the backend's own checks (the ones `doctor` runs) catch what no retry can fix
(issue 15.5, issue 13.13): a model path that does not exist, a distributed mode the model cannot run.
One clear error naming the path and the key to edit, exit 2, nothing started. And two mlx-lm ranks on
loopback, in a mode the model supports, answer through the proxy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest

from launcher.supervision.ports import free_port
from tests.harness import anyclaude, start_serve


def _serve_once(tmp_path: Path, name: str, entry: dict[str, Any]) -> tuple[int, str, float]:
    config = tmp_path / ".anyclauderc.json"
    config.write_text(json.dumps({"port": free_port(), "backend": name, "backends": {name: entry}}))
    started = time.monotonic()
    result = anyclaude("serve", "--config", str(config), timeout=120)
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


@pytest.mark.parametrize("kind", ["mlx-server", "mlx-lm"])
def test_a_missing_model_fails_fast_once_naming_the_path_and_the_key(tmp_path: Path, kind: str) -> None:
    missing = tmp_path / "no-such-model"
    code, out, took = _serve_once(tmp_path, "local", {"type": kind, "model": str(missing), "port": free_port()})
    assert code == 2, out
    assert took < 20, f"took {took:.0f} s: a missing model must not go through the restart backoff"
    assert str(missing) in out and "backends.local.model" in out, out
    assert out.count(str(missing)) <= 2, "said once (message and hint), not once per retry"
    assert "restart" not in out, "a hint to `anyclaude restart` fails when nothing runs"
    home = Path(__import__("os").environ["ANYCLAUDE_HOME"])
    assert not (home / "logs" / "local.log").exists(), "no backend may have been started"


def test_pipeline_with_a_model_mlx_lm_cannot_pipeline_is_refused_before_start(tmp_path: Path, tiny_model: Path) -> None:
    dist = {"hosts": ["127.0.0.1", "127.0.0.1"], "backend": "ring", "pipeline": True}
    entry = {"type": "mlx-lm", "model": str(tiny_model), "port": free_port(), "distributed": dist}
    code, out, took = _serve_once(tmp_path, "cluster", entry)
    assert code == 2, out
    assert "backends.cluster.distributed.pipeline" in out and "false" in out, out
    assert took < 30, took
    config = tmp_path / ".anyclauderc.json"
    doctor = anyclaude("doctor", "--config", str(config), "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    found = [c for name, c in checks.items() if name.endswith(".distributed")]
    assert found and found[0]["status"] == "fail", checks.keys()


def test_two_mlx_lm_ranks_on_loopback_answer_through_the_proxy(tmp_path: Path, tiny_model: Path) -> None:
    hub = tmp_path / "hub"
    hub.mkdir()
    dist = {"hosts": ["127.0.0.1", "127.0.0.1"], "backend": "ring", "pipeline": False}
    entry = {
        "type": "mlx-lm",
        "model": str(tiny_model),
        "port": free_port(),
        "distributed": dist,
        "env": {"HF_HUB_CACHE": str(hub)},
        "startupTimeout": 180_000,
    }
    s = start_serve(tmp_path, entry={"command": None, **entry}, name="cluster")
    try:
        s.wait_state("READY", timeout=180)
        client = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=120)
        reply = client.messages.create(
            model="claude-sonnet-4-6", max_tokens=4, messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.content and reply.content[0].type == "text"
        assert 1 <= reply.usage.output_tokens <= 4
    finally:
        s.close()
