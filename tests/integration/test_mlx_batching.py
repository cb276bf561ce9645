"""Our MLX server under concurrent traffic: real processes on 127.0.0.1, the tiny random llama, real HTTP.

Claude Code sends side requests beside its main conversation and runs subagents in parallel; these tests
check that they run together (continuous batching on mlx-lm's BatchGenerator), that the greedy output of a
request does not depend on what runs beside it or on the prompt cache, and that the prompt cache serves
every one of them: shared prefixes computed once, partial prefills kept, each conversation's slot kept
apart by Claude Code's session and agent headers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.mlx_server_process import ServerProcess, poll, start_server, stop_server
from tests.tiny_model import make_tiny_llama4, tiny_model  # noqa: F401  (fixture)

SYSTEM = "You are a careful assistant. Tools can read files, write files, list folders and run commands. "
# About four seconds of generation for the tiny model: long enough to send other requests beside it.
LONG = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 1900, "temperature": 0}
SESSION = {"x-claude-code-session-id": "2f6c1d9e-session"}


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:  # noqa: F811
    started = start_server(tiny_model, tmp_path_factory.mktemp("logs"))
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def reference(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:  # noqa: F811
    """The same model one request at a time, without a prompt cache: what each reply must be."""
    started = start_server(
        tiny_model, tmp_path_factory.mktemp("logs"), ["--decode-concurrency", "1", "--cache-slots", "0"]
    )
    yield started
    stop_server(started)


def tokens(server: ServerProcess, messages: list[dict[str, Any]]) -> int:
    response = httpx.post(server.url + "/v1/tokenize", json={"messages": messages}, timeout=30)
    count: int = response.json()["count"]
    return count


def queue(server: ServerProcess) -> dict[str, int]:
    figures: dict[str, int] = server.health()["queue"]  # type: ignore[assignment]
    return figures


def chat(server: ServerProcess, messages: list[dict[str, Any]], max_tokens: int = 12, **extra: Any) -> tuple[str, int]:
    """Greedy reply text and cached_tokens of a non-streamed chat request."""
    headers = extra.pop("headers", None)
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, **extra}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    return data["choices"][0]["message"]["content"], data["usage"]["prompt_tokens_details"]["cached_tokens"]


def conversation(system: str, *turns: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, *({"role": "user", "content": t} for t in turns)]


def test_a_side_request_is_answered_while_a_long_reply_streams(server: ServerProcess) -> None:
    first_token = threading.Event()
    finished: list[float] = []

    def long_reply() -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json={**LONG, "stream": True}) as response:
            for line in response.iter_lines():
                if '"content":"' in line and '"role"' not in line:
                    first_token.set()
        finished.append(time.monotonic())

    reader = threading.Thread(target=long_reply)
    reader.start()
    try:
        assert first_token.wait(30), "the long reply never started"
        side = httpx.post(server.url + "/v1/chat/completions", json={**LONG, "max_tokens": 3}, timeout=60)
        answered = time.monotonic()
        assert side.status_code == 200, side.text
    finally:
        reader.join(60)
    # One at a time, the side request would have waited for the whole long reply (~4 s).
    assert finished and answered < finished[0] - 1.0, (answered, finished)


def test_concurrent_greedy_replies_equal_replies_alone(server: ServerProcess, reference: ServerProcess) -> None:
    first_turns = [conversation(SYSTEM * 4, f"Question {n}: what is the capital of France?") for n in range(4)]
    alone = [chat(reference, messages) for messages in first_turns]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda messages: chat(server, messages), first_turns))
    assert [text for text, _ in together] == [text for text, _ in alone]
    # Their next turns at once, each from its own cached conversation: still the same as computed alone.
    second_turns = [
        [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": "And of Italy?"}]
        for messages, (reply, _) in zip(first_turns, together, strict=True)
    ]
    with ThreadPoolExecutor(4) as pool:
        cached = list(pool.map(lambda messages: chat(server, messages), second_turns))
    fresh = [chat(reference, messages) for messages in second_turns]
    assert [text for text, _ in cached] == [text for text, _ in fresh]
    assert all(reused > 0 for _, reused in cached), cached


def test_repetition_penalty_sees_the_cached_prefix_under_concurrency(
    server: ServerProcess, reference: ServerProcess
) -> None:
    messages = conversation(SYSTEM, "Numbers: one two three four five six seven eight nine ten.")
    chat(server, messages, max_tokens=4)  # the prompt is now cached
    with ThreadPoolExecutor(3) as pool:
        beside = [pool.submit(chat, server, conversation(SYSTEM, f"Side {n}"), 30) for n in range(2)]
        penalized = pool.submit(chat, server, messages, 30, repetition_penalty=3.0)
        text, reused = penalized.result()
        for side in beside:
            side.result()
    assert reused > 0
    assert text == chat(reference, messages, 30, repetition_penalty=3.0)[0]


def test_prompt_reading_is_reported_before_the_first_token(server: ServerProcess) -> None:
    body = {**LONG, "max_tokens": 2, "stream": True}
    body["messages"] = conversation(SYSTEM * 8, "Read all of that.")
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[0].startswith(": prefill "), lines[:3]
    first = json.loads(lines[0].removeprefix(": prefill "))
    assert first["prompt_tokens"] > 0 and first["processed"] == first["cached_tokens"]
    data = [n for n, line in enumerate(lines) if line.startswith("data: ")]
    assert data and data[0] > 0, "the first data chunk came before the admission comment"


def test_a_cancelled_prefill_is_kept_for_the_retry(tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    slow = start_server(tiny_model, tmp_path, ["--prefill-step", "8"])
    try:
        messages = conversation("The quick brown fox jumps over the lazy dog. " * 64, "Summarize.")
        body = {"messages": messages, "max_tokens": 2, "temperature": 0, "stream": True}
        seen = 0
        with httpx.stream("POST", slow.url + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith(": prefill "):
                    progress = json.loads(line.removeprefix(": prefill "))
                    seen = progress["processed"]
                    if seen >= 200:
                        total = progress["prompt_tokens"]
                        break  # the client gives up mid-prefill (Claude Code's retry comes next)
        assert 200 <= seen < total
        assert poll(lambda: queue(slow)["running"] == 0, 10), queue(slow)
        _, reused = chat(slow, messages, max_tokens=2)
        assert seen <= reused < total, (seen, reused, total)
    finally:
        stop_server(slow)


def test_requests_sent_together_start_as_one_batch(tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    fresh = start_server(tiny_model, tmp_path)
    prompts = [conversation(SYSTEM, f"Subagent {n}: list the files.") for n in range(4)]

    async def burst() -> None:  # one client writing four requests in one go, as Claude Code (and the proxy) do
        async with httpx.AsyncClient(base_url=fresh.url, timeout=60) as client:
            bodies = [{"messages": messages, "max_tokens": 4, "temperature": 0} for messages in prompts]
            replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for body in bodies))
        assert [reply.status_code for reply in replies] == [200] * 4

    try:
        asyncio.run(burst())
        # Started one by one, the first would run a prefill ahead and the batch would end short every turn.
        assert queue(fresh)["largest_start"] == 4, queue(fresh)
    finally:
        stop_server(fresh)


def test_parallel_subagents_never_evict_the_main_conversation(tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    small = start_server(tiny_model, tmp_path, ["--cache-slots", "4"])
    try:
        main = conversation(SYSTEM * 4, "Plan the work.")
        reply, _ = chat(small, main, headers=SESSION)
        agents = [{**SESSION, "x-claude-code-agent-id": f"agent-{n}"} for n in range(3)]
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda h: chat(small, conversation(SYSTEM * 3, f"Task {h}"), headers=h), agents))
        for n in range(3):  # titles and summaries beside them
            chat(small, conversation("Write a title.", f"Side {n}"), max_tokens=4, headers=SESSION)
        follow = [*main, {"role": "assistant", "content": reply}, {"role": "user", "content": "Go on."}]
        _, reused = chat(small, follow, headers=SESSION)
        slots = httpx.get(small.url + "/v1/cache", timeout=10).json()["slots"]
        assert reused >= tokens(small, main), (reused, slots)
    finally:
        stop_server(small)


def test_requests_sharing_a_long_prefix_compute_it_once(tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    shared = start_server(tiny_model, tmp_path, ["--prefill-step", "32"])
    try:
        system = "You are a careful assistant. Tools: read, write, list, run. " * 24
        prompts = [conversation(system, f"Subtask {n}: count to three.") for n in range(3)]
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda messages: chat(shared, messages, max_tokens=4), prompts))
        # One computed the shared system prompt; the others started from it.
        assert sorted(reused > 300 for _, reused in results) == [False, True, True], results
    finally:
        stop_server(shared)


def test_a_model_whose_cache_cannot_merge_runs_one_at_a_time(tmp_path: Path) -> None:
    model = make_tiny_llama4(tmp_path / "tiny-llama4", context=2048)
    alone = start_server(model, tmp_path)
    try:
        batching = alone.health()["models"][0]["batching"]  # type: ignore[index]
        assert batching == {"enabled": False, "reason": "its ChunkedKVCache cannot be merged into a batch"}
        assert "batching off for tiny-llama4" in alone.log()
        peak = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], queue(alone)["running"])
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(3) as pool:
                replies = list(pool.map(lambda n: chat(alone, conversation(SYSTEM, f"Q{n}"), 40), range(3)))
        finally:
            done.set()
            watcher.join()
        assert len(replies) == 3 and peak[0] == 1, peak
    finally:
        stop_server(alone)


def test_a_seeded_request_is_reproducible_beside_other_requests(server: ServerProcess) -> None:
    def sample() -> str:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "temperature": 1.0, "seed": 11}
        response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        content: str = response.json()["choices"][0]["message"]["content"]
        return content

    expected = sample()
    with ThreadPoolExecutor(3) as pool:
        noise = [pool.submit(chat, server, conversation(SYSTEM, f"noise {n}"), 40, temperature=1.0) for n in range(2)]
        seeded = pool.submit(sample)
        assert seeded.result() == expected
        for future in noise:
            future.result()


def test_a_reply_finishes_when_its_model_is_evicted_and_loaded_again(tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    # Room for one tiny model's weights (~0.5 MB): loading the other evicts the first.
    args = ["--alias", "a", "--extra-model", f"b={tiny_model}", "--memory-limit", "0.0007"]
    pool = start_server(tiny_model, tmp_path, args)
    try:
        finished: list[dict[str, Any]] = []
        first_token = threading.Event()

        def long_reply() -> None:
            body = {**LONG, "model": "a", "stream": True, "stream_options": {"include_usage": True}}
            with httpx.stream("POST", pool.url + "/v1/chat/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if '"content":"' in line:
                        first_token.set()
                    if '"usage"' in line:
                        finished.append(json.loads(line.removeprefix("data: "))["usage"])

        reader = threading.Thread(target=long_reply)
        reader.start()
        assert first_token.wait(30)
        for model in ("b", "a"):  # b evicts a; a comes back as a new copy
            short = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "model": model}
            assert httpx.post(pool.url + "/v1/chat/completions", json=short, timeout=60).status_code == 200
        reader.join(120)
        assert finished and finished[0]["completion_tokens"] == LONG["max_tokens"], finished
    finally:
        stop_server(pool)
