"""Speculative decoding on the tiny random llama (fast): real server processes, real HTTP, greedy replies the same
with and without it, alone, beside another request and under a repetition penalty. The slow suite
(`test_mlx_speculative.py`) checks the same and more on the real SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.mlx_server_process import ServerProcess, start_server, stop_server
from tests.tiny_model import tiny_model  # noqa: F401  (fixture)

# Random weights fall into loops, which drafting from the reply so far predicts.
MESSAGES = [{"role": "user", "content": "Repeat after me: one two three, one two three, one two three."}]


@pytest.fixture(scope="module")
def servers(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:  # noqa: F811
    logs = tmp_path_factory.mktemp("logs")
    started = [start_server(tiny_model, logs, ["--speculative", "ngram"])]
    try:
        started.append(start_server(tiny_model, logs, ["--speculative", "off"]))
        yield started
    finally:
        for server in started:
            stop_server(server)


def reply(server: ServerProcess, max_tokens: int, **extra: Any) -> tuple[str, str, int]:
    body = {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, **extra}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    return (
        data["choices"][0]["message"]["content"],
        data["choices"][0]["finish_reason"],
        data["usage"]["completion_tokens"],
    )


def speculation(server: ServerProcess) -> dict[str, int]:
    figures: dict[str, int] = server.health()["queue"]["speculative"]  # type: ignore[index]
    return figures


def test_greedy_replies_are_the_same(servers: list[ServerProcess]) -> None:
    speculative, plain = servers
    for max_tokens, extra in ((300, {}), (123, {"repetition_penalty": 1.2}), (200, {"stop": ["three"]})):
        assert reply(speculative, max_tokens, **extra) == reply(plain, max_tokens, **extra), extra
    figures = speculation(speculative)
    assert figures["accepted"] > 0 and figures["tokens"] > figures["steps"], figures


def test_replies_together_are_the_same(servers: list[ServerProcess]) -> None:
    speculative, plain = servers
    sizes = [400, 40, 250]
    expected = [reply(plain, n) for n in sizes]
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda n: reply(speculative, n), sizes)) == expected
