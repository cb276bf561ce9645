"""Prompt-cache reuse on a real server with the tiny model: same greedy output as without reuse, and reuse happened.

Two servers run side by side: one with prompt caching (slots saved under a test folder), one with
`--cache-slots 0`. Every request goes to both; at temperature 0 their outputs must be equal while the
cached one reports `cached_tokens` > 0 — after a plain extension, after a divergence (trim or copy),
with a repetition penalty, and after a restart (SIGTERM, then SIGKILL) that reloads the slots from disk.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.mlx_server_process import ServerProcess, poll, start_server, stop_server
from tests.tiny_model import tiny_model  # noqa: F401  (fixture)

SYSTEM = "You are a careful assistant. Tools can read files, write files, list folders and run commands. " * 6
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} a path",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
    for name in ("read", "write", "list")
]
# Enough greedy tokens that a wrong cached key or value shows up as a different reply.
MAX_TOKENS = 16


def chat(server: ServerProcess, messages: list[dict[str, Any]], **extra: Any) -> tuple[str, int]:
    """Greedy reply text and `cached_tokens`, non-streaming."""
    body = {"messages": messages, "tools": TOOLS, "max_tokens": MAX_TOKENS, "temperature": 0, **extra}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()
    return data["choices"][0]["message"]["content"], data["usage"]["prompt_tokens_details"]["cached_tokens"]


def chat_stream(server: ServerProcess, messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The same over a stream with `include_usage`: the usage chunk carries `cached_tokens` too."""
    body = {
        "messages": messages,
        "tools": TOOLS,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    text, cached = "", -1
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
            if chunk.get("usage"):
                cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    return text, cached


def prompt_tokens(server: ServerProcess, messages: list[dict[str, Any]], generation_prompt: bool = True) -> int:
    body = {"messages": messages, "tools": TOOLS, "add_generation_prompt": generation_prompt}
    count: int = httpx.post(server.url + "/v1/tokenize", json=body, timeout=30).json()["count"]
    return count


def conversation(*turns: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, *({"role": "user", "content": t} for t in turns)]


def cache_state(server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(server.url + "/v1/cache", timeout=10).json()
    return body


def saved(server: ServerProcess) -> bool:
    persistence = cache_state(server)["persistence"]
    return bool(persistence["unsaved_tokens"] == 0 and not persistence["writing"])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompt-cache-logs")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompt-cache")


@pytest.fixture(scope="module")
def plain(tiny_model: Path, logs: Path) -> Iterator[ServerProcess]:  # noqa: F811
    started = start_server(tiny_model, logs, ["--cache-slots", "0", "--cache-dir", ""])
    yield started
    stop_server(started)


def cached_server(model: Path, logs: Path, cache_dir: Path, *extra: str) -> ServerProcess:
    return start_server(model, logs, ["--cache-dir", str(cache_dir), "--cache-slots", "4", *extra])


def test_reuse_gives_the_same_output_as_no_reuse(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    cache_dir: Path,
    plain: ServerProcess,
) -> None:
    cached = cached_server(tiny_model, logs, cache_dir)
    try:
        history = conversation("Read the file notes.txt and summarize it.")
        previous_prompt = 0
        for turn in range(3):  # each turn carries the previous reply, a tool result and a new user message
            reply, hit = chat(cached, history)
            assert reply == chat(plain, history)[0], f"turn {turn}"
            # The whole previous prompt at least (plus the generated tokens the client sent back unchanged).
            assert hit >= previous_prompt and (hit > 0) == (turn > 0), (turn, hit, previous_prompt)
            previous_prompt = prompt_tokens(cached, history)
            history = [
                *history,
                {"role": "assistant", "content": reply},
                {"role": "tool", "content": f"file {turn}: the river runs through a quiet town"},
                {"role": "user", "content": f"Now list folder number {turn}."},
            ]

        # A side request sharing only the system prompt and tools (a copy), then the main conversation again.
        side = conversation("Write a five word title for this conversation.")
        side_reply, side_hit = chat(cached, side)
        assert side_reply == chat(plain, side)[0]
        assert side_hit >= prompt_tokens(cached, side[:1], generation_prompt=False)
        main_reply, main_hit = chat(cached, history)
        assert main_reply == chat(plain, history)[0] and main_hit >= previous_prompt, "the side request evicted it"

        # Divergence near the end (a trim of the slot's own tail) and an exact resend.
        edited = [*history[:-1], {"role": "user", "content": "Now list folder number nine instead."}]
        assert chat(cached, edited)[0] == chat(plain, edited)[0]
        resend_reply, resend_hit = chat(cached, edited)
        assert resend_reply == chat(plain, edited)[0] and resend_hit > 0

        # A repetition penalty sees the whole history, reused prefix included.
        penalized, penalized_hit = chat(cached, history, repetition_penalty=1.5)
        assert penalized == chat(plain, history, repetition_penalty=1.5)[0] and penalized_hit > 0

        streamed, streamed_hit = chat_stream(cached, history)
        assert streamed == chat(plain, history)[0] and streamed_hit > 0

        state = cache_state(cached)
        assert state["totals"]["hits"] >= 7 and state["totals"]["misses"] >= 1
        assert 1 <= len(state["slots"]) <= 4
        assert {"tokens", "bytes", "hits", "last_used"} <= set(state["slots"][0])
        assert "prefilled_tokens=" in cached.log() and "cached_tokens=" in cached.log()
    finally:
        stop_server(cached)  # SIGTERM: the shutdown save writes every slot


def test_slots_survive_a_restart_and_a_kill(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    cache_dir: Path,
    plain: ServerProcess,
) -> None:
    history = conversation("Read the file notes.txt and summarize it.")
    # Written by the previous test's server at SIGTERM; make a fresh folder work the same when run alone.
    first = cached_server(tiny_model, logs, cache_dir)
    try:
        reply, _ = chat(first, history)
        assert poll(lambda: saved(first), 10)
    finally:
        stop_server(first)

    second = cached_server(tiny_model, logs, cache_dir)
    try:
        assert "restored" in second.log()
        reply_after, hit = chat(second, history)
        assert hit > 0 and reply_after == reply == chat(plain, history)[0]
        longer = [*history, {"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
        longer_reply, _ = chat(second, longer)
        assert poll(lambda: saved(second), 10), "a long new prefix is written right after the request"
    finally:
        os.killpg(second.proc.pid, signal.SIGKILL)  # no shutdown save
        second.proc.wait(timeout=10)

    third = cached_server(tiny_model, logs, cache_dir)
    try:
        again, hit = chat(third, longer)
        assert again == longer_reply == chat(plain, longer)[0]
        assert hit == prompt_tokens(third, longer) - 1, "the kill kept the slot written after the last request"
    finally:
        stop_server(third)


def test_corrupt_slot_file_is_skipped_and_warmup_prefills(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    tmp_path: Path,
    plain: ServerProcess,
) -> None:
    folder = tmp_path / "cache"
    warmup = tmp_path / "system.txt"
    warmup.write_text(SYSTEM)
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    first = cached_server(tiny_model, logs, folder, "--warmup-file", str(warmup), "--warmup-tools", str(tools))
    try:
        history = conversation("Hello there.")
        reply, hit = chat(first, history)
        assert hit > 0, "the warmup prefilled the system prompt and tools before ready"
        assert reply == chat(plain, history)[0]
    finally:
        stop_server(first)
    [fingerprint] = list(folder.iterdir())
    (fingerprint / "0000000000000000.safetensors").write_bytes(b"not a safetensors file")
    second = cached_server(tiny_model, logs, folder)
    try:
        assert "skipping" in second.log() and "0000000000000000" in second.log()
        assert chat(second, conversation("Hello there."))[1] > 0
    finally:
        stop_server(second)


@pytest.mark.parametrize("interval", [1.0, 0.0])
def test_a_busy_stretch_is_saved_within_the_persist_interval(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    tmp_path: Path,
    interval: float,
) -> None:
    # No disk tier: it writes a slot as soon as it is evicted from RAM (4 slots here), busy or not.
    flags = ("--cache-persist-interval", str(interval), "--cache-disk-bytes", "0")
    server = cached_server(tiny_model, logs, tmp_path / "cache", *flags)
    try:
        started = time.monotonic()
        written = 0
        turn = 0
        # Requests back to back: the engine never idles for its half-second idle save, so only the
        # periodic one (off with interval 0) can write while this runs.
        while time.monotonic() - started < 3.0 and not written:
            turn += 1
            chat(server, conversation(f"Busy request {turn}: list the folder."), max_tokens=2)
            written = sum(cache_state(server)["persistence"]["files"].values())
        if interval:
            assert written > 0, "nothing was saved during a 3 s busy stretch"
        else:
            assert written == 0 and turn > 10
    finally:
        stop_server(server)
