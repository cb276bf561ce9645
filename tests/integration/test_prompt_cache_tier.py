"""The prompt cache's disk tier on a real server with the tiny model.

A RAM budget of about one conversation (`--cache-bytes`) makes each new conversation push the previous one
out of RAM; the disk tier must keep it and load it back for that conversation's next turn, with the same
greedy continuation as a server that prefills everything (`--cache-slots 0`); a SIGKILL while slots are
being spilled must leave a folder the next start reads whole; a full disk must cost only the cache.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import full_tmpfs
from tests.integration.mlx_server_process import ServerProcess, poll, start_server, stop_server
from tests.tiny_model import tiny_model  # noqa: F401  (fixture)

# Each conversation has its own system prompt, so no other conversation's slot can serve its prefix.
SYSTEMS = {
    "a": "You answer questions about rivers, towns and the weather. " * 5,
    "b": "Numbers: one two three four five six seven eight nine ten. " * 5,
    "c": "Tools can read files, write files, list folders and run commands. " * 5,
}
MAX_TOKENS = 12
# A first turn of the tiny model takes ~100 KB of keys and values (256-token blocks): room for one conversation.
RAM_BYTES = "150000"


def chat(server: ServerProcess, messages: list[dict[str, Any]]) -> tuple[str, int]:
    body = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()
    return data["choices"][0]["message"]["content"], data["usage"]["prompt_tokens_details"]["cached_tokens"]


def cache_state(server: ServerProcess) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(server.url + "/v1/cache", timeout=10).json()
    return state


def first_turn(name: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEMS[name]}, {"role": "user", "content": f"Tell me about {name}."}]


def next_turn(history: list[dict[str, Any]], reply: str, question: str) -> list[dict[str, Any]]:
    return [*history, {"role": "assistant", "content": reply}, {"role": "user", "content": question}]


def tiered_server(model: Path, logs: Path, folder: Path, *extra: str) -> ServerProcess:
    args = ["--cache-dir", str(folder), "--cache-bytes", RAM_BYTES, "--cache-slots", "8", *extra]
    return start_server(model, logs, args)


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


@pytest.fixture()
def plain(tiny_model: Path, logs: Path) -> Iterator[ServerProcess]:  # noqa: F811
    server = start_server(tiny_model, logs, ["--cache-slots", "0"])
    yield server
    stop_server(server)


def test_a_conversation_pushed_out_of_ram_is_loaded_back_from_disk_with_the_same_continuation(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    tmp_path: Path,
    plain: ServerProcess,
) -> None:
    server = tiered_server(tiny_model, logs, tmp_path / "cache")
    try:
        history = first_turn("a")
        reply, _ = chat(server, history)
        chat(server, first_turn("b"))  # pushes "a" out of RAM
        assert poll(lambda: cache_state(server)["disk"]["slots"] >= 1, 10), cache_state(server)
        follow_up = next_turn(history, reply, "And then?")
        answer, cached = chat(server, follow_up)
        assert answer == chat(plain, follow_up)[0], "the slot loaded from disk continues like a fresh prefill"
        prompt_a = httpx.post(server.url + "/v1/tokenize", json={"messages": history}, timeout=10).json()["count"]
        assert cached >= prompt_a, f"only {cached} of the first turn's {prompt_a} tokens came from the cache"
        disk = cache_state(server)["disk"]
        assert disk["loads"] == 1 and disk["load_s"] > 0, disk
        assert cache_state(server)["totals"]["hits_disk"] == 1
        assert "loaded disk slot" in server.log() and "rather than computing" in server.log()
    finally:
        stop_server(server)


def test_a_kill_while_slots_spill_leaves_a_folder_the_next_start_reads_whole(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    tmp_path: Path,
    plain: ServerProcess,
) -> None:
    folder = tmp_path / "cache"
    histories = {name: first_turn(name) for name in SYSTEMS}
    for round_ in range(3):
        server = tiered_server(tiny_model, logs, folder)
        try:
            assert "skipping" not in server.log(), server.log()
            for name, history in histories.items():
                reply, _ = chat(server, history)  # each turn pushes the previous conversation to disk
                histories[name] = next_turn(history, reply, f"Round {round_}?")
        finally:
            os.killpg(server.proc.pid, signal.SIGKILL)  # right after the last spill: no shutdown save
            server.proc.wait(timeout=10)
    server = tiered_server(tiny_model, logs, folder)
    try:
        assert "skipping" not in server.log(), server.log()
        assert not [p for p in folder.rglob(".*") if p.is_file()], "temp files are cleaned at start"
        restored = cache_state(server)
        assert restored["totals"]["slots"] + restored["disk"]["slots"] >= 2, restored
        history = histories["a"]
        answer, cached = chat(server, history)
        assert answer == chat(plain, history)[0]
        assert cached > 0, "conversation a came back from the folder"
    finally:
        stop_server(server)


def test_a_full_disk_during_a_spill_still_serves_every_request_and_is_said_once(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    with full_tmpfs(disk):
        # The default disk budget (10 % of no free space) would turn the tier off: set one.
        server = tiered_server(tiny_model, logs, disk / "cache", "--cache-disk-bytes", "50000000")
        try:
            histories = {name: first_turn(name) for name in SYSTEMS}
            for round_ in range(2):
                for name, history in histories.items():
                    reply, _ = chat(server, history)
                    histories[name] = next_turn(history, reply, f"Round {round_}?")
            assert poll(lambda: cache_state(server)["persistence"]["failed_writes"] >= 2, 10), cache_state(server)
            log = server.log()
            assert log.count("prompt cache: cannot save to") == 1, log
            assert "Traceback" not in log
            assert poll(lambda: cache_state(server)["disk"]["dropped"] >= 1, 10), cache_state(server)
        finally:
            stop_server(server)


def test_the_budgets_come_from_the_machine_and_are_said_at_start(
    tiny_model: Path,  # noqa: F811
    logs: Path,
    tmp_path: Path,
) -> None:
    import psutil

    server = start_server(tiny_model, logs, ["--cache-dir", str(tmp_path / "cache")])
    try:
        said = next(line for line in server.log().splitlines() if "prompt cache: RAM" in line)
        assert "machine" in said and "model weights" in said and "margin" in said and "% of" in said, said
        totals, disk = cache_state(server)["totals"], cache_state(server)["disk"]
        machine = psutil.virtual_memory().total
        assert 0 < totals["max_bytes"] < machine and totals["max_bytes"] != 4 << 30, totals
        assert disk["max_bytes"] > 0, disk
    finally:
        stop_server(server)
