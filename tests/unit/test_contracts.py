"""What the proxy and our MLX server agree on is named once (adapters/contracts.py), and the server's
process-wide settings are made in one start-up step that, embedded, leaves the proxy's environment alone."""

from __future__ import annotations

import os
import sys

import pytest

from adapters.contracts import SESSION_HEADERS, is_default_model, prefill_comment
from launcher.bridge import chat
from launcher.bridge.sse import Comment


def test_the_proxy_reads_the_prefill_report_the_server_writes() -> None:
    figures = {"prompt_tokens": 3000, "cached_tokens": 1024, "processed": 1536}
    line = prefill_comment(figures)
    assert line.startswith(": ") and line.endswith("\n\n")
    assert Comment(line[2:].strip()).prefill() == figures


def test_the_session_headers_travel_and_claude_ids_mean_the_default_model() -> None:
    sent = {name: f"v-{i}" for i, name in enumerate(SESSION_HEADERS)} | {"authorization": "x"}
    assert chat.session_headers(sent) == {name: sent[name] for name in SESSION_HEADERS}
    assert is_default_model(None) and is_default_model("claude-sonnet-4-6") and not is_default_model("qwen3")


def test_an_embedded_server_leaves_the_offline_settings_out_of_the_proxys_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.mlx_server.config import _cached_snapshot
    from adapters.mlx_server.process import configure_process

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    before = sys.getswitchinterval()
    try:
        configure_process(own_process=False)
        assert _cached_snapshot("no-such-org/no-such-model") is None
        assert "HF_HUB_OFFLINE" not in os.environ, "a backend started later would inherit it"
        assert sys.getswitchinterval() <= 0.001
    finally:
        sys.setswitchinterval(before)
