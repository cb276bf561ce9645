"""Tool calls a small model writes as text, through a real `anyclaude serve` and the official anthropic SDK.

The scripted backend writes what real Qwen2.5-Coder models wrote when asked through Claude Code's tools
(```json fences after prose, bare JSON, doubled braces, Qwen3-Coder XML), in pieces of three characters.
The client must get tool_use blocks and stop_reason tool_use, streamed and not; JSON naming no offered
tool must come through as text; a call that cannot be made to fit is shown as text and the request log
flags it (`tool_parse_failed`), which `anyclaude requests --tool-parse-failed` finds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.harness import Serve, anyclaude, scripted_entry, serves, start_serve, wait_until
from tests.integration.test_request_log import logged

StartServe = Callable[..., Serve]
TOOLS: list[Any] = [
    {
        "name": "Read",
        "description": "Read a file.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["file_path"],
        },
    },
    {
        "name": "Bash",
        "description": "Run a command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
]
NOTES = {"file_path": "/tmp/x/notes.txt"}
CALLS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "fence": (
        "I'll read the file.\n```json\n"
        '{"name": "Read", "arguments": {"file_path": "/tmp/x/notes.txt", "limit": "20"}}\n```',
        [("Read", {**NOTES, "limit": 20})],
    ),
    "bare": ('{"name": "Bash", "arguments": {"command": "ls /tmp/x"}}', [("Bash", {"command": "ls /tmp/x"})]),
    "doubled": ('{{"name": "Read", "arguments": {{"file_path": "/tmp/x/notes.txt"}}}}', [("Read", NOTES)]),
    "xml": ("<function=Read>\n<parameter=file_path>\n/tmp/x/notes.txt\n</parameter>\n</function>", [("Read", NOTES)]),
    "two": (
        'First:\n```json\n{"name": "Read", "arguments": {"file_path": "/a"}}\n```\n'
        'Then:\n```json\n{"name": "Bash", "arguments": {"command": "ls"}}\n```',
        [("Read", {"file_path": "/a"}), ("Bash", {"command": "ls"})],
    ),
}
EXAMPLE = 'Save this as package.json:\n```json\n{"name": "my-app", "version": "1.0.0"}\n```'
UNFIXABLE = '```json\n{"name": "Read", "arguments": {"limit": 3}}\n```'


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServe]:
    with serves(lambda entry, **kwargs: start_serve(tmp_path, entry=entry, name="local", **kwargs)) as start:
        yield start


def ask(c: anthropic.Anthropic, said: str, stream: bool, **extra: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": f"Read the notes. [script:say]{said}"}],
        **extra,
    }
    if not stream:
        return c.messages.create(**params)
    with c.messages.stream(**params) as events:
        return events.get_final_message()


def test_calls_written_as_text_become_tool_use_and_failures_are_flagged(serve: StartServe) -> None:
    s = serve(scripted_entry())
    s.wait_state("READY")
    c = anthropic.Anthropic(base_url=s.proxy_url, api_key="local", max_retries=0, timeout=30)
    expected_rows: list[tuple[int, int]] = []
    for said, calls in CALLS.values():
        for stream in (False, True):
            message = ask(c, said, stream)
            used = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
            assert used == calls, (said, stream)
            assert message.stop_reason == "tool_use"
            assert not any(b.type == "text" and "{" in b.text for b in message.content)
            expected_rows.append((len(calls), 0))
    for stream in (False, True):
        example = ask(c, EXAMPLE, stream)
        assert [(b.type, getattr(b, "text", None)) for b in example.content] == [("text", EXAMPLE)]
        assert example.stop_reason == "end_turn"
        expected_rows.append((0, 0))
    for stream in (False, True):
        failed = ask(c, UNFIXABLE, stream)
        assert [(b.type, getattr(b, "text", None)) for b in failed.content] == [("text", UNFIXABLE)]
        assert failed.stop_reason == "end_turn"
        expected_rows.append((0, 1))
    # tool_choice none: the model may not call, so its text is never taken for a call.
    said = CALLS["fence"][0]
    refused = ask(c, said, True, tool_choice={"type": "none"})
    assert [(b.type, getattr(b, "text", None)) for b in refused.content] == [("text", said)]
    expected_rows.append((None, 0))

    rows = logged(s.home, len(expected_rows))
    assert [(r["text_tool_calls"], r["tool_parse_failed"]) for r in rows] == expected_rows
    assert [r["streamed"] for r in rows[-3:-1]] == [0, 1]
    # The proxy's log says why, and never the arguments' contents.
    log_file = s.home / "logs" / "anyclaude.log"
    reason = "shown as text: Read is called without its required file_path"
    wait_until(lambda: log_file.exists() and reason in log_file.read_text(), 10, what="the reason logged")
    assert "/tmp/x/notes.txt" not in log_file.read_text() and "my-app" not in log_file.read_text()

    listed = anyclaude("requests", "--json", "--tool-parse-failed", "-n", "50")
    assert listed.returncode == 0, listed.stderr
    found = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["tool_parse_failed"]) for r in found] == [(r["id"], 1) for r in rows[-3:-1]]
    table = anyclaude("requests", "-n", "3")
    assert table.stdout.count("tool_parse_failed") == 2, table.stdout
