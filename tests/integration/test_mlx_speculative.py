"""Speculative decoding on the real SmolLM2-135M-Instruct: two real servers, `--speculative ngram` and `off`, real
HTTP. Greedy replies must be the same token for token, and stop sequences, max_tokens, a repetition penalty,
cancellation, the prompt cache and a request joining mid-reply must behave as without it (slow: a real model on CPU).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from adapters.openblas import openblas_env
from tests.integration.mlx_server_process import ServerProcess, poll, start_server, stop_server
from tests.smollm2 import smollm2_dir

pytestmark = pytest.mark.slow

# A file the model is asked to copy with one change: most of the reply is text of the prompt.
FILE = "".join(
    f"def handle_{name}(request):\n    user = load_user(request)\n"
    f"    return render(request, '{name}.html', user=user)\n\n"
    for name in ("index", "login", "logout", "profile", "settings", "search")
)
COPY = [
    {
        "role": "user",
        "content": f"Here is views.py:\n\n{FILE}\nRewrite the whole file, renaming load_user to fetch_user.",
    }
]
FREE = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    speculative = start_server(smollm2_dir(), logs, ["--speculative", "ngram"], env=openblas_env(), deadline_s=180)
    try:
        plain = start_server(smollm2_dir(), logs, ["--speculative", "off"], env=openblas_env(), deadline_s=180)
    except BaseException:
        stop_server(speculative)
        raise
    yield speculative, plain
    stop_server(plain)
    stop_server(speculative)


def chat(server: ServerProcess, messages: list[dict[str, Any]], max_tokens: int, **extra: Any) -> dict[str, Any]:
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, **extra}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=600)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def outcome(data: dict[str, Any]) -> tuple[str, str, int]:
    choice = data["choices"][0]
    return choice["message"]["content"], choice["finish_reason"], data["usage"]["completion_tokens"]


def speculation(server: ServerProcess) -> dict[str, int]:
    figures: dict[str, int] = server.health()["queue"]["speculative"]  # type: ignore[index]
    return figures


def test_greedy_replies_are_the_same_copying_and_writing(servers: tuple[ServerProcess, ServerProcess]) -> None:
    speculative, plain = servers
    before = speculation(speculative)
    copied = chat(speculative, COPY, 160)
    after = speculation(speculative)
    assert outcome(copied) == outcome(chat(plain, COPY, 160))
    # It did speculate, and kept drafted tokens: several tokens per pass.
    assert after["accepted"] - before["accepted"] > 20, (before, after)
    assert after["tokens"] - before["tokens"] > 1.5 * (after["steps"] - before["steps"]), (before, after)
    assert outcome(chat(speculative, FREE, 64)) == outcome(chat(plain, FREE, 64))


def test_stops_max_tokens_and_a_repetition_penalty_behave_the_same(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    speculative, plain = servers
    # A stop sequence inside the copied text, likely within a pass of several tokens.
    for extra in ({"stop": ["'login.html'"]}, {"repetition_penalty": 1.3}, {"stop": ["\n\n\n"]}):
        for max_tokens in (37, 90):
            got = outcome(chat(speculative, COPY, max_tokens, **extra))
            assert got == outcome(chat(plain, COPY, max_tokens, **extra)), (extra, max_tokens)


def test_the_prompt_cache_keeps_the_same_tokens(servers: tuple[ServerProcess, ServerProcess]) -> None:
    speculative, plain = servers
    replies = [chat(server, COPY, 48, user="cache-test") for server in servers]
    follow = [
        [
            *COPY,
            {"role": "assistant", "content": outcome(reply)[0]},
            {"role": "user", "content": "Now add a docstring."},
        ]
        for reply in replies
    ]
    assert follow[0] == follow[1]
    second = [chat(server, follow[0], 24) for server in (speculative, plain)]
    cached = [data["usage"]["prompt_tokens_details"]["cached_tokens"] for data in second]
    assert cached[0] == cached[1] > len(FILE) // 8, cached
    assert outcome(second[0]) == outcome(second[1])


def test_a_cancelled_reply_ends_and_the_next_one_is_the_same(servers: tuple[ServerProcess, ServerProcess]) -> None:
    speculative, plain = servers
    body = {"messages": COPY, "max_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", speculative.url + "/v1/chat/completions", json=body, timeout=600) as response:
        chunks = 0
        for line in response.iter_lines():
            chunks += '"content":"' in line
            if chunks >= 12:
                break  # the client goes away mid-reply
    assert poll(lambda: speculative.health()["queue"]["running"] == 0, 120)  # type: ignore[index]
    assert outcome(chat(speculative, COPY, 60)) == outcome(chat(plain, COPY, 60))


def test_a_request_arriving_mid_reply_joins_the_batch(servers: tuple[ServerProcess, ServerProcess]) -> None:
    speculative, plain = servers
    expected = [outcome(chat(plain, COPY, 200)), outcome(chat(plain, FREE, 24))]
    started = threading.Event()
    results: dict[str, tuple[str, str, int]] = {}

    def long_copy() -> None:
        body = {"messages": COPY, "max_tokens": 200, "temperature": 0, "stream": True}
        parts: list[str] = []
        with httpx.stream("POST", speculative.url + "/v1/chat/completions", json=body, timeout=600) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"]
                    if choice and choice[0]["delta"].get("content"):
                        parts.append(choice[0]["delta"]["content"])
                        if len(parts) >= 20:
                            started.set()
        results["copy"] = ("".join(parts), "", 0)

    with ThreadPoolExecutor(1) as pool:
        copying = pool.submit(long_copy)
        assert started.wait(300), "the copy never got going"
        side = outcome(chat(speculative, FREE, 24))
        copying.result(600)
    assert side == expected[1]
    assert results["copy"][0] == expected[0][0]
