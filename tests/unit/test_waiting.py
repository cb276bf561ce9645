"""The wait before an answer: the prefill board, the progress line, and the exit status after a Ctrl-C."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from launcher.bridge.sse import Comment
from launcher.waiting import (
    GRACE_S,
    PLAIN_EVERY_S,
    Board,
    Interrupts,
    ProgressWriter,
    Reading,
    StatusFile,
    Watch,
    has_own_status_line,
    progress_line,
    remove_stale_status_files,
    run_headless,
    status_line_settings,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(processed: int, total: int = 3059, cached: int = 0) -> dict[str, int]:
    return {"prompt_tokens": total, "cached_tokens": cached, "processed": processed}


def test_the_line_says_tokens_read_share_and_time_left() -> None:
    reading = Reading(3059, 1240, opened=0.0, first_at=10.0, first_processed=0, at=20.0)  # 124 tokens/s
    assert progress_line(reading) == "reading the prompt: 1,240 / 3,059 tokens (40 %, ~15 s left)"


def test_the_line_has_no_estimate_before_progress_is_seen() -> None:
    reading = Reading(3059, 512, opened=0.0, first_at=10.0, first_processed=512, at=10.0)
    assert progress_line(reading) == "reading the prompt: 512 / 3,059 tokens (16 %)"


def test_the_time_left_counts_down_between_reports() -> None:
    reading = Reading(3059, 1240, opened=0.0, first_at=10.0, first_processed=0, at=20.0)  # ~15 s left at 20
    assert progress_line(reading, now=26.0).endswith("(40 %, ~9 s left)")
    assert progress_line(reading, now=60.0).endswith("(40 %, ~1 s left)")  # a slow chunk: never below 1 s


def test_a_long_wait_is_told_in_minutes() -> None:
    reading = Reading(100_000, 10_000, opened=0.0, first_at=0.0, first_processed=0, at=100.0)  # 100 tokens/s
    assert progress_line(reading) == "reading the prompt: 10,000 / 100,000 tokens (10 %, ~15 min 00 s left)"


def test_the_board_estimates_from_the_rate_since_the_first_report() -> None:
    clock = Clock()
    board = Board(clock)
    key = board.open()
    assert board.current() is None  # no report yet: nothing to show
    board.report(key, report(1024, cached=1024))  # admitted, the cached part already counts as read
    clock.now += 4
    board.report(key, report(1536, cached=1024))
    reading = board.current()
    assert reading is not None and reading.processed == 1536
    assert reading.seconds_left() == (3059 - 1536) / 128
    board.close(key)
    assert board.current() is None


def test_the_board_ignores_reports_without_figures_and_after_close() -> None:
    board = Board(Clock())
    key = board.open()
    board.report(key, {"prompt_tokens": "many", "processed": 3})
    board.report(key, {"prompt_tokens": 0, "processed": 0})
    assert board.current() is None
    board.close(key)
    board.report(key, report(5))
    assert board.current() is None


def test_the_board_shows_the_oldest_waiting_request() -> None:
    clock = Clock()
    board = Board(clock)
    first = board.open()
    clock.now += 1
    second = board.open()
    board.report(second, report(10, total=50))
    board.report(first, report(20, total=3000))
    reading = board.current()
    assert reading is not None and reading.prompt_tokens == 3000
    board.close(first)
    reading = board.current()
    assert reading is not None and reading.prompt_tokens == 50


def test_a_terminal_gets_one_line_rewritten_and_cleared() -> None:
    clock = Clock()
    board = Board(clock)
    out = io.StringIO()
    writer = ProgressWriter(board, out, terminal=True, clock=clock)
    key = board.open()
    board.report(key, report(100))
    writer.tick()
    assert out.getvalue() == ""  # a short wait shows nothing
    clock.now += GRACE_S
    writer.tick()
    clock.now += 0.5
    board.report(key, report(200))
    writer.tick()
    board.close(key)
    writer.tick()
    writer.tick()
    assert out.getvalue().split("\r") == [
        "",
        "reading the prompt: 100 / 3,059 tokens (3 %)\x1b[K",
        "reading the prompt: 200 / 3,059 tokens (6 %, ~43 s left)\x1b[K",
        "\x1b[K",  # cleared once, when the answer started
    ]


def test_elsewhere_a_plain_line_every_few_seconds() -> None:
    clock = Clock()
    board = Board(clock)
    out = io.StringIO()
    writer = ProgressWriter(board, out, terminal=False, clock=clock)
    key = board.open()
    clock.now += GRACE_S
    for step in range(1, 31):  # 3 s of reports every 0.1 s, ticks every 0.5 s
        clock.now += 0.1
        board.report(key, report(100 * step))
        if step % 5 == 0:
            writer.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + int(2.9 // PLAIN_EVERY_S)
    assert lines[0] == "reading the prompt: 500 / 3,059 tokens (16 %, ~3 s left)"
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_ctrl_c_turns_a_success_into_130() -> None:
    interrupts = Interrupts()
    assert interrupts.exit_code(0) == 0
    interrupts.note()
    assert interrupts.exit_code(0) == 130
    assert interrupts.exit_code(1) == 1  # Claude Code's own failure is kept


async def _items(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        await asyncio.sleep(0)
        yield value


def test_a_watched_stream_is_on_the_board_until_answered() -> None:
    async def main() -> None:
        board = Board()
        comment = Comment('prefill {"prompt_tokens": 100, "cached_tokens": 0, "processed": 40}')
        watch = Watch(board, _items([comment, {"choices": []}, comment]))
        seen = []
        async for item in watch.items():
            seen.append(item)
            current = board.current()
            if len(seen) == 1:
                assert current is not None and current.processed == 40
            elif len(seen) == 2:
                watch.answered()
            else:
                assert current is None  # a report after the answer started is not shown
        assert len(seen) == 3 and board.current() is None

    asyncio.run(main())


def test_a_stream_that_ends_early_leaves_the_board() -> None:
    async def main() -> None:
        board = Board()
        comment = Comment('prefill {"prompt_tokens": 100, "cached_tokens": 0, "processed": 40}')
        items = Watch(board, _items([comment, comment])).items()
        await items.__anext__()
        assert board.current() is not None
        await items.aclose()  # the client went away before the first token
        assert board.current() is None

    asyncio.run(main())


def test_headless_run_exits_130_after_a_ctrl_c() -> None:
    async def claude(on_sigint: Any) -> int:
        on_sigint()
        return 0

    assert asyncio.run(run_headless(claude, io.StringIO(), Board())) == 130


# --- the interactive UI's status line


def test_the_status_line_command_prints_the_state_file_every_second(tmp_path: Path) -> None:
    state = tmp_path / "a folder" / "statusline.txt"
    state.parent.mkdir()
    state.write_text("reading the prompt: 1 / 2 tokens (50 %)\n")
    line = json.loads(status_line_settings(state))["statusLine"]
    assert line["type"] == "command" and line["refreshInterval"] == 1
    done = subprocess.run(["bash", "-c", line["command"]], capture_output=True, text=True, check=True)
    assert done.stdout == "reading the prompt: 1 / 2 tokens (50 %)\n"  # the space in the path is quoted
    state.unlink()
    done = subprocess.run(["bash", "-c", line["command"]], capture_output=True, text=True)
    assert done.stdout == "" and done.stderr == ""  # before the first write or after the end: an empty line


def test_the_users_own_status_line_wins(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "repo" / "sub"
    (home / ".claude").mkdir(parents=True)
    project.mkdir(parents=True)
    (tmp_path / "repo" / ".git").mkdir()
    env = {"HOME": str(home)}
    assert not has_own_status_line([], env, project)
    assert has_own_status_line(["--settings", "{}"], env, project)  # their own settings: ours would compete
    assert has_own_status_line(["--settings={}"], env, project)
    user = home / ".claude" / "settings.json"
    user.write_text(json.dumps({"statusLine": {"type": "command", "command": "echo me"}}))
    assert has_own_status_line([], env, project)
    user.write_text("{not json")
    assert not has_own_status_line([], env, project)
    local = tmp_path / "repo" / ".claude" / "settings.local.json"  # the project's root, above the folder
    local.parent.mkdir()
    local.write_text(json.dumps({"statusLine": {"type": "command", "command": "echo repo"}}))
    assert has_own_status_line([], env, project)
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert has_own_status_line([], {"CLAUDE_CONFIG_DIR": str(home / ".claude")}, other) is False


def test_the_status_file_says_the_model_until_a_prompt_is_read_for_long(tmp_path: Path) -> None:
    clock = Clock()
    board = Board(clock)
    status = StatusFile(board, tmp_path / "statusline.txt", "demo-model", clock)
    status.tick()
    assert status.path.read_text() == "demo-model\n"
    key = board.open()
    board.report(key, report(100))
    status.tick()
    assert status.path.read_text() == "demo-model\n"  # a short wait changes nothing
    clock.now += GRACE_S
    status.tick()
    assert status.path.read_text() == "reading the prompt: 100 / 3,059 tokens (3 %)\n"
    board.close(key)
    status.tick()
    assert status.path.read_text() == "demo-model\n"
    status.remove()
    assert not status.path.exists()


def test_the_line_has_no_estimate_once_the_whole_prompt_is_read() -> None:
    reading = Reading(3059, 3059, opened=0.0, first_at=10.0, first_processed=0, at=20.0)
    assert progress_line(reading) == "reading the prompt: 3,059 / 3,059 tokens (100 %)"


def test_status_files_of_launchers_that_are_gone_are_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    mine, stale, other = (tmp_path / f"statusline-{pid}.txt" for pid in (os.getpid(), gone.pid, "x"))
    for path in (mine, stale, other, tmp_path / "local.json"):
        path.write_text("demo-model\n")
    remove_stale_status_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name, "local.json"])
