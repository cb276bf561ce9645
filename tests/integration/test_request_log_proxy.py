"""The request log on the proxy's other paths, in-process with real HTTP: relayed answers (streamed and
whole) from an Anthropic-speaking backend, a stream the backend tears, and a client that leaves early.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from adapters.base import ApiKind
from launcher.observe import store
from launcher.observe.recorder import LogSettings, Recorder
from launcher.proxy import ProxyOptions, StaticGate, Upstream, create_proxy_app
from tests.harness import wait_until
from tests.scripted_backend import Backend, ServerThread


@dataclass
class Chain:
    backend: Backend
    relay: ServerThread  # proxy A: passes through to proxy B, as to the real Anthropic API
    bridge: ServerThread  # proxy B: translates to the scripted OpenAI-style backend
    relay_log: Recorder
    bridge_log: Recorder


def recorder(path: Path) -> Recorder:
    log = Recorder(path, LogSettings)
    log.start()
    return log


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    scripted = Backend()
    relay_log, bridge_log = recorder(tmp_path / "a.db"), recorder(tmp_path / "b.db")
    try:
        with ServerThread(scripted.app) as backend:
            b_up = Upstream("scripted", backend.url + "/v1", ApiKind.OPENAI, tokenize_url=backend.url + "/v1/tokenize")
            with ServerThread(create_proxy_app(StaticGate(b_up), ProxyOptions(), bridge_log)) as bridge:
                a_up = Upstream("claude", bridge.url, ApiKind.ANTHROPIC, passthrough=True)
                with ServerThread(create_proxy_app(StaticGate(a_up), ProxyOptions(), relay_log)) as relay:
                    yield Chain(scripted, relay, bridge, relay_log, bridge_log)
    finally:
        relay_log.close()
        bridge_log.close()


def logged(log: Recorder, count: int) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        with store.reader(log.path) as conn:
            return [] if conn is None else store.rows(conn, 100)

    return wait_until(lambda: (rows := read()) and len(rows) >= count and rows, 10, what=f"{count} rows")


def test_relayed_streams_and_whole_answers_are_logged_with_their_usage(chain: Chain) -> None:
    client = anthropic.Anthropic(base_url=chain.relay.url, api_key="x", max_retries=0, timeout=30)
    with client.messages.stream(
        model="claude-x",
        max_tokens=9,
        tools=[{"name": "Read", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "[script:tools]"}],
    ) as stream:
        stream.get_final_message()
    client.messages.create(model="claude-x", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
    streamed, whole = logged(chain.relay_log, 2)
    assert streamed["backend"] == "claude" and streamed["streamed"] == 1
    assert (streamed["input_tokens"], streamed["output_tokens"], streamed["stop_reason"]) == (30, 20, "tool_use")
    assert streamed["ttft"] is not None
    assert whole["streamed"] == 0
    assert (whole["input_tokens"], whole["output_tokens"], whole["stop_reason"]) == (12, 2, "end_turn")


def test_a_stream_the_backend_tears_is_logged_as_an_error(chain: Chain) -> None:
    client = anthropic.Anthropic(base_url=chain.bridge.url, api_key="x", max_retries=0, timeout=30)
    with (
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model="claude-x", max_tokens=9, messages=[{"role": "user", "content": "[script:drop]"}]
        ) as stream,
    ):
        stream.get_final_message()
    (row,) = logged(chain.bridge_log, 1)
    assert row["status"] == 200 and row["error_type"] == "api_error" and row["stop_reason"] is None


def test_a_client_that_leaves_mid_stream_is_logged_as_incomplete(chain: Chain) -> None:
    body = {"model": "m", "max_tokens": 9, "stream": True, "messages": [{"role": "user", "content": "[script:hang]"}]}
    with httpx.stream("POST", chain.bridge.url + "/v1/messages", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if "content_block_delta" in line:
                break  # leave while the backend is still generating
    (row,) = logged(chain.bridge_log, 1)
    assert row["error_type"] == "incomplete" and row["ttft"] is not None
    wait_until(lambda: chain.backend.active == 0, 10, what="the backend stream to be closed")
