"""Stream translation edge cases that outside checks found: tool-call fragments whose id changes or is
missing, reasoning after a call, a character cut by max_tokens, a stop sequence left in the text."""

from __future__ import annotations

from typing import Any

from launcher.bridge.response import MessageAssembler
from launcher.bridge.toolcalls import CallCollector, finalize
from tests.scripted_backend import SCRIPTS, chunk, tc
from tests.unit.test_bridge_stream import run


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    assembler = MessageAssembler()
    for event in events:
        assembler.add(event)
    return assembler.message


def calls(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(b["name"], b["input"]) for b in fold(events)["content"] if b["type"] == "tool_use"]


def collected(fragments: list[dict[str, Any]]) -> list[tuple[str, str]]:
    collector = CallCollector()
    for fragment in fragments:
        collector.feed(fragment)
    return [(call.name, call.arguments) for call in finalize(collector.calls)]


def fragment(index: int | None, id: str | None = None, name: str | None = None, args: str | None = None) -> Any:
    return tc(index, id, name, args)["choices"][0]["delta"]["tool_calls"][0]


# ----- item 1: an id that changes partway through a call


def test_a_new_id_without_a_name_continues_the_call_with_an_index() -> None:
    fragments = [
        fragment(0, "call_1", "Bash", '{"command":'),
        fragment(0, "call_2", None, ' "ls'),
        fragment(0, "call_3", None, ' -l"}'),
    ]
    assert collected(fragments) == [("Bash", '{"command": "ls -l"}')]


def test_a_new_id_without_a_name_continues_the_call_without_an_index() -> None:
    fragments = [
        fragment(None, "call_1", "Bash", '{"command":'),
        fragment(None, "call_2", None, ' "ls"}'),
    ]
    assert collected(fragments) == [("Bash", '{"command": "ls"}')]


def test_the_changed_id_scripts_keep_their_arguments_end_to_end() -> None:
    for name in ("changing_id", "changing_id_no_index"):
        events = run(SCRIPTS[name])
        assert calls(events) == [("Bash", {"command": "ls -l"})], name
        assert fold(events)["stop_reason"] == "tool_use"


# ----- item 2: parallel calls without index and id, or sharing one id


def test_a_name_starts_a_new_call_when_there_is_neither_index_nor_id() -> None:
    fragments = [
        fragment(None, None, "Read", '{"file_path": "/a"}'),
        fragment(None, None, "Grep", '{"pattern": "x"}'),
        fragment(None, None, "Read", '{"file_path":'),
        fragment(None, None, None, ' "/b"}'),
    ]
    assert collected(fragments) == [
        ("Read", '{"file_path": "/a"}'),
        ("Grep", '{"pattern": "x"}'),
        ("Read", '{"file_path": "/b"}'),
    ]


def test_calls_sharing_one_id_stay_apart() -> None:
    for index in (None, 0):
        fragments = [
            fragment(index, "call_0", "Read", '{"file_path": "/a"}'),
            fragment(index, "call_0", "Read", '{"file_path": "/b"}'),
        ]
        assert collected(fragments) == [("Read", '{"file_path": "/a"}'), ("Read", '{"file_path": "/b"}')]


def test_a_name_repeated_on_every_fragment_of_one_call_is_still_one_call() -> None:
    for call_id in (None, "call_1"):
        fragments = [
            fragment(0, call_id, "Bash", '{"command":'),
            fragment(0, call_id, "Bash", ' "ls"}'),
        ]
        assert collected(fragments) == [("Bash", '{"command": "ls"}')]


def test_the_anonymous_and_shared_id_scripts_give_every_call() -> None:
    for name in ("anonymous_calls", "shared_id"):
        events = run(SCRIPTS[name])
        assert calls(events) == [("Read", {"file_path": "/a"}), ("Grep", {"pattern": "x"})], name
        ids = [b["id"] for b in fold(events)["content"] if b["type"] == "tool_use"]
        assert len(set(ids)) == 2, name


# ----- item 3: reasoning after a tool call


def test_reasoning_after_a_tool_call_is_kept_as_thinking() -> None:
    message = fold(run(SCRIPTS["think_after_call"]))
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["thinking", "text", "thinking", "tool_use"]
    assert message["content"][0]["thinking"] == "First."
    assert message["content"][2]["thinking"] == "Then more."
    assert message["content"][2]["signature"]
    assert message["content"][3]["input"] == {"file_path": "/r"}


# ----- item 4: a multibyte character cut by max_tokens


def test_a_replacement_character_ending_a_cut_reply_is_not_sent() -> None:
    events = run(SCRIPTS["cut_character"])
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Shine \N{GLOWING STAR}"
    assert fold(events)["stop_reason"] == "max_tokens"


def test_a_replacement_character_the_model_wrote_is_kept() -> None:
    events = run([chunk({"content": "bad byte: \ufffd"}), chunk({"content": "."}), chunk(finish="stop")])
    assert fold(events)["content"][0]["text"] == "bad byte: \ufffd."
    events = run([chunk({"content": "ends in \ufffd"}), chunk(finish="stop")])
    assert fold(events)["content"][0]["text"] == "ends in \ufffd"


# ----- item 5: a stop sequence the backend left in the text


def test_a_stop_sequence_left_in_the_text_is_removed() -> None:
    events = run(SCRIPTS["stop_left_in"], stop_sequences=["END"])
    message = fold(events)
    assert message["content"] == [{"type": "text", "text": "one two "}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_a_stop_sequence_split_across_chunks_is_removed_and_a_near_miss_kept() -> None:
    chunks = [chunk({"content": "a <"}), chunk({"content": "/st"}), chunk({"content": "op> b"}), chunk(finish="stop")]
    message = fold(run(chunks, stop_sequences=["</stop>"]))
    assert message["content"] == [{"type": "text", "text": "a "}]
    assert message["stop_sequence"] == "</stop>"
    near = [chunk({"content": "a </st"}), chunk({"content": "art>"}), chunk(finish="stop")]
    message = fold(run(near, stop_sequences=["</stop>"]))
    assert message["content"] == [{"type": "text", "text": "a </start>"}]
    assert message["stop_reason"] == "end_turn"


def test_a_replacement_character_in_thinking_is_held_the_same_way() -> None:
    chunks = [chunk({"reasoning_content": "odd \ufffd"}), chunk({"content": "ok"}), chunk(finish="stop")]
    message = fold(run(chunks))
    assert message["content"][0]["thinking"] == "odd \ufffd"
    cut = fold(run([chunk({"reasoning_content": "star \N{GLOWING STAR}\ufffd\ufffd"}), chunk(finish="length")]))
    assert cut["content"][0]["thinking"] == "star \N{GLOWING STAR}"
    assert (
        cut["content"][0]["signature"]
        == fold(run([chunk({"reasoning_content": "star \N{GLOWING STAR}"})]))["content"][0]["signature"]
    )


def test_one_call_a_reply_keeps_only_the_first_call() -> None:
    chunks = [
        tc(0, "call_a", "Read", '{"file_path": "/w/greet.py"}'),
        tc(1, "call_b", "Edit", '{"file_path": "/w/greet.py", "old_string": "x", "new_string": "y"}'),
        chunk(finish="tool_calls"),
    ]

    assert calls(run(chunks, one_call=True)) == [("Read", {"file_path": "/w/greet.py"})]
    assert [name for name, _ in calls(run(chunks))] == ["Read", "Edit"]
    assert fold(run(chunks, one_call=True))["stop_reason"] == "tool_use"
