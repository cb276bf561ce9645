"""Golden tests: the exact Anthropic events produced for scripted OpenAI streams."""

from __future__ import annotations

import re
from typing import Any

from launcher.bridge.leaks import MarkerWatch
from launcher.bridge.response import MessageAssembler, completion_as_chunk
from launcher.bridge.stream import StreamTranslator, thinking_signature
from tests.scripted_backend import SCRIPTS, chunk, tc


def run(chunks: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    translator = StreamTranslator("claude-x", **kwargs)
    events = translator.start()
    for item in chunks:
        events += translator.feed(item)
    return events + translator.finish()


def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for e in events:
        if e["type"] == "content_block_start":
            block = e["content_block"]
            out.append(("start", e["index"], block["type"], block.get("name")))
        elif e["type"] == "content_block_delta":
            d = e["delta"]
            value = d.get("text", d.get("partial_json", d.get("thinking", d.get("signature"))))
            out.append(("delta", e["index"], d["type"], value))
        elif e["type"] == "content_block_stop":
            out.append(("stop", e["index"]))
        elif e["type"] == "message_delta":
            out.append(("message_delta", e["delta"]["stop_reason"], e["delta"]["stop_sequence"], e["usage"]))
        else:
            out.append((e["type"],))
    return out


def usage(new: int, output: int, read: int = 0) -> dict[str, int]:
    return {
        "input_tokens": new,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": read,
    }


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    assembler = MessageAssembler()
    for event in events:
        assembler.add(event)
    return assembler.message


def test_plain_text_events() -> None:
    assert shape(run(SCRIPTS["text"])) == [
        ("message_start",),
        ("start", 0, "text", None),
        ("delta", 0, "text_delta", "Hello"),
        ("delta", 0, "text_delta", " world"),
        ("stop", 0),
        ("message_delta", "end_turn", None, usage(12, 2)),
        ("message_stop",),
    ]


def test_text_then_interleaved_tool_calls_get_sequential_whole_blocks() -> None:
    events = run(SCRIPTS["tools"])
    assert shape(events) == [
        ("message_start",),
        ("start", 0, "text", None),
        ("delta", 0, "text_delta", "Let me check."),
        ("stop", 0),
        ("start", 1, "tool_use", "Read"),
        ("delta", 1, "input_json_delta", '{"file_path": "/tmp/a.txt"}'),
        ("stop", 1),
        ("start", 2, "tool_use", "Grep"),
        ("delta", 2, "input_json_delta", '{"pattern": "TODO"}'),
        ("stop", 2),
        ("start", 3, "tool_use", "Bash"),
        ("delta", 3, "input_json_delta", '{"command": "ls"}'),
        ("stop", 3),
        ("message_delta", "tool_use", None, usage(30, 20)),
        ("message_stop",),
    ]
    message = fold(events)
    assert [b.get("input") for b in message["content"][1:]] == [
        {"file_path": "/tmp/a.txt"},
        {"pattern": "TODO"},
        {"command": "ls"},
    ]
    assert [b["id"] for b in message["content"][1:]] == ["call_a", "call_b", "call_c"]


def test_reasoning_becomes_a_signed_thinking_block() -> None:
    assert shape(run(SCRIPTS["reasoning"]))[:8] == [
        ("message_start",),
        ("start", 0, "thinking", None),
        ("delta", 0, "thinking_delta", "Think"),
        ("delta", 0, "thinking_delta", "ing."),
        ("delta", 0, "signature_delta", thinking_signature("Thinking.")),
        ("stop", 0),
        ("start", 1, "text", None),
        ("delta", 1, "text_delta", "Answer."),
    ]


def test_cached_tokens_are_reported_apart() -> None:
    reported = run(SCRIPTS["cached"])[-2]["usage"]
    assert reported == {
        "input_tokens": 100,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 900,
    }


def test_stop_sequence_from_backend_and_from_text_end() -> None:
    assert run(SCRIPTS["stopseq"], stop_sequences=["END"])[-2]["delta"] == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "END",
    }
    events = run([chunk({"content": "done STOP"}), chunk(finish="stop")], stop_sequences=["STOP"])
    assert events[-2]["delta"]["stop_sequence"] == "STOP"


def test_length_is_max_tokens_and_missing_usage_is_estimated() -> None:
    assert run(SCRIPTS["length"])[-2]["delta"]["stop_reason"] == "max_tokens"
    assert run(SCRIPTS["nousage"], input_tokens=7)[-2]["usage"]["input_tokens"] == 7


def test_duplicate_or_missing_tool_ids_are_replaced() -> None:
    events = run(
        [tc(0, "same", "A", "{}"), tc(1, "same", "B", "{}"), tc(2, None, "C", "{}"), chunk(finish="tool_calls")]
    )
    ids = [e["content_block"]["id"] for e in events if e["type"] == "content_block_start"]
    assert ids[0] == "same" and len(set(ids)) == 3 and all(ids)


def test_text_after_tool_calls_is_sent_after_them() -> None:
    events = run([tc(0, "a", "A", '{"x":'), chunk({"content": "\n"}), tc(0, args="1}"), chunk({"content": "done"})])
    assert shape(events)[1:6] == [
        ("start", 0, "tool_use", "A"),
        ("delta", 0, "input_json_delta", '{"x":1}'),
        ("stop", 0),
        ("start", 1, "text", None),
        ("delta", 1, "text_delta", "\ndone"),
    ]


def test_leaked_tool_call_text_becomes_a_tool_use() -> None:
    message = fold(run(SCRIPTS["leak"], parser=MarkerWatch()))
    assert message["content"][0] == {"type": "text", "text": "I will read it.\n"}
    assert message["content"][1]["type"] == "tool_use"
    assert message["content"][1]["name"] == "Read"
    assert message["content"][1]["input"] == {"file_path": "/tmp/x"}
    assert message["stop_reason"] == "tool_use"


def test_marker_watch_streams_plain_text_and_holds_partial_markers() -> None:
    watch = MarkerWatch()
    assert watch.feed("Hello <to") == ["Hello "]
    assert watch.feed("day>") == ["<today>"]
    assert watch.finish() == []


def test_whole_json_completion_is_translated() -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}
    message = fold(run([completion_as_chunk(body)]))
    assert message["content"] == [{"type": "text", "text": "whole"}]


def test_backend_ids_outside_the_api_charset_are_replaced() -> None:
    message = fold(run([tc(0, "functions.Read:0", "Read", "{}"), chunk(finish="tool_calls")]))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", message["content"][0]["id"])


def test_unambiguous_argument_flaws_are_repaired_and_a_cut_string_is_not() -> None:
    message = fold(
        run(
            [
                tc(0, "a", "Read", '{"flag": True, "skip": None, "paths": ["/a",],}'),
                tc(1, "b", "Bash", '{"command": "rm -rf /tmp/fo'),  # cut mid-string: never guessed
                chunk(finish="length"),
            ]
        )
    )
    calls = [b for b in message["content"] if b["type"] == "tool_use"]
    assert [c["input"] for c in calls] == [{"flag": True, "skip": None, "paths": ["/a"]}, {}]
    notes = [b["text"] for b in message["content"] if b["type"] == "text"]
    assert len(notes) == 1 and '{"command": "rm -rf /tmp/fo' in notes[0]
