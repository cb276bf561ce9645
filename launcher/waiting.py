"""The wait before an answer: how far the backend has read the prompt, shown while Claude Code is silent.

A cold prefill of Claude Code's prompt takes half a minute on a small CPU, minutes on a busy laptop, and under
`-p` nothing moves meanwhile. Our MLX server reports its progress in SSE comments
(`: prefill {"prompt_tokens": N, "cached_tokens": C, "processed": P}`); the proxy, which runs in the launcher's
own process, records the latest report of each request on `BOARD` until the first token arrives, and the
launcher shows the oldest waiting request on stderr (`show_progress`): one line rewritten in place on a
terminal, a plain line every few seconds elsewhere. Claude Code's stdout is never touched.

In the interactive UI the same line goes to Claude Code's status line: Claude Code 2.1.197 re-runs a
`statusLine` command every `refreshInterval` seconds, during a request too (without `refreshInterval` it only
re-runs it when the conversation changes, so not while a prompt is read). `run_interactive` passes one through
`--settings` that prints a small file the launcher keeps current: the progress while a prompt is read, the
model's name otherwise. A status line of the user's own (in any settings file, or their own `--settings`) wins.

A Ctrl-C is Claude Code's (it interrupts the request), but under `-p` Claude Code 2.1.197 then exits 0;
`Interrupts` remembers that one arrived so the run ends with 130, as an interrupted command does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shlex
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

from launcher.bridge.sse import Comment
from launcher.paths import write_private

T = TypeVar("T")

# A wait shorter than this shows nothing: a warm prompt cache answers in well under a second.
GRACE_S = 1.0
# How often the line (or the status file) is brought up to date, and how often a plain line is written.
TICK_S = 0.5
PLAIN_EVERY_S = 3.0
SIGINT_EXIT = 130
# Seconds between Claude Code's runs of the status-line command (its minimum).
STATUS_REFRESH_S = 1
# Where Claude Code 2.1.197 reads managed settings, which win over everything else.
_MANAGED_SETTINGS = (
    Path("/etc/claude-code/managed-settings.json"),
    Path("/Library/Application Support/ClaudeCode/managed-settings.json"),
)


@dataclass(frozen=True)
class Reading:
    """One request's prompt reading, as far as the latest report told."""

    prompt_tokens: int
    processed: int
    opened: float  # monotonic time the request was opened
    first_at: float | None = None  # when the first report came, and how far it had got then
    first_processed: int = 0
    at: float | None = None  # when the latest report came

    def seconds_left(self, now: float | None = None) -> float | None:
        """The time left at the rate seen since the first report, counted down to `now` (reports come once per
        chunk of the prompt, seconds apart); None until two reports differ."""
        if self.first_at is None or self.at is None or self.at <= self.first_at:
            return None
        done = self.processed - self.first_processed
        if done <= 0:
            return None
        rate = done / (self.at - self.first_at)
        since = now - self.at if now is not None else 0.0
        return max(0.0, (self.prompt_tokens - self.processed) / rate - max(0.0, since))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Board:
    """The latest prefill report of each request still waiting for its first token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = itertools.count()
        self._waiting: dict[int, Reading] = {}

    def open(self) -> int:
        """A new request is waiting; its key for `report` and `close`."""
        key = next(self._ids)
        self._waiting[key] = Reading(0, 0, self._clock())
        return key

    def report(self, key: int, report: Mapping[str, Any]) -> None:
        """Take a backend's prefill report; one without usable figures is ignored."""
        before = self._waiting.get(key)
        total, processed = _int(report.get("prompt_tokens")), _int(report.get("processed"))
        if before is None or total is None or processed is None or total == 0:
            return
        now = self._clock()
        processed = min(processed, total)
        if before.first_at is None:
            self._waiting[key] = Reading(total, processed, before.opened, now, processed, now)
        else:
            self._waiting[key] = Reading(total, processed, before.opened, before.first_at, before.first_processed, now)

    def close(self, key: int) -> None:
        """The request's answer started, or it ended: nothing to wait for any more."""
        self._waiting.pop(key, None)

    def current(self) -> Reading | None:
        """The oldest waiting request that has reported, or None."""
        reported = [r for r in self._waiting.values() if r.at is not None]
        return min(reported, key=lambda r: r.opened) if reported else None

    @contextlib.contextmanager
    def waiting(self) -> Iterator[int]:
        """`open` now, `close` when the block ends (however it ends)."""
        key = self.open()
        try:
            yield key
        finally:
            self.close(key)


BOARD = Board()


class Watch(Generic[T]):
    """Passes a backend stream's items through, recording its prefill reports on a board until `answered`.

    The request is on the board from the first item read until `answered` or the end of the stream (however
    it ends: a finished answer, a failure, or the client going away).
    """

    def __init__(self, board: Board, source: AsyncIterator[T]) -> None:
        self.board = board
        self._source = source
        self._key: int | None = None

    def answered(self) -> None:
        """The first token arrived: the request no longer waits."""
        if self._key is not None:
            self.board.close(self._key)

    async def items(self) -> AsyncGenerator[T, None]:
        with self.board.waiting() as key:
            self._key = key
            async for item in self._source:
                if isinstance(item, Comment) and (report := item.prefill()) is not None:
                    self.board.report(key, report)  # ignored once closed
                yield item


def progress_line(reading: Reading, now: float | None = None) -> str:
    """`reading the prompt: 1,240 / 3,059 tokens (41 %, ~20 s left)`, the time left as of `now`."""
    percent = 100 * reading.processed // reading.prompt_tokens
    left = reading.seconds_left(now)
    tail = f", ~{_duration(left)} left" if left is not None and reading.processed < reading.prompt_tokens else ""
    return f"reading the prompt: {reading.processed:,} / {reading.prompt_tokens:,} tokens ({percent} %{tail})"


def _duration(seconds: float) -> str:
    whole = max(1, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s"


class ProgressWriter:
    """Writes the board's progress line to `stream`: in place on a terminal, plain lines elsewhere."""

    def __init__(
        self, board: Board, stream: TextIO, terminal: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.board = board
        self.stream = stream
        self.terminal = terminal
        self._clock = clock
        self._shown = False  # a line is on the terminal now
        self._last_plain = float("-inf")

    def tick(self) -> None:
        reading = self.board.current()
        now = self._clock()
        if reading is None or now - reading.opened < GRACE_S:
            self.clear()
            return
        line = progress_line(reading, now)
        if self.terminal:
            self._write(f"\r{line}\x1b[K")
            self._shown = True
        elif now - self._last_plain >= PLAIN_EVERY_S:
            self._write(line + "\n")
            self._last_plain = now

    def clear(self) -> None:
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False
        self._last_plain = float("-inf")  # the next wait shows its first line at once

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not end the run


async def show_progress(writer: ProgressWriter) -> None:
    """Redraw until cancelled; the line is cleared on the way out."""
    try:
        while True:
            writer.tick()
            await asyncio.sleep(TICK_S)
    finally:
        writer.clear()


class Interrupts:
    """Counts the SIGINTs that arrive while Claude Code runs."""

    def __init__(self) -> None:
        self.count = 0

    def note(self) -> None:
        self.count += 1

    def exit_code(self, code: int) -> int:
        """Claude Code's `code`, or 130 when a Ctrl-C interrupted a run it then called a success."""
        return SIGINT_EXIT if self.count and code == 0 else code


async def run_headless(
    run: Callable[[Callable[[], None]], Awaitable[int]], stream: TextIO, board: Board = BOARD
) -> int:
    """Run Claude Code under `-p` (`run` takes the SIGINT callback) with the progress line on `stream`.

    Returns Claude Code's exit status, or 130 after a Ctrl-C it answered with 0.
    """
    interrupts = Interrupts()
    writer = ProgressWriter(board, stream, _is_terminal(stream))

    def on_sigint() -> None:
        interrupts.note()
        writer.clear()

    shower = asyncio.create_task(show_progress(writer), name="prefill-progress")
    try:
        code = await run(on_sigint)
    finally:
        shower.cancel()
        await asyncio.gather(shower, return_exceptions=True)
    return interrupts.exit_code(code)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


# --- the interactive UI's status line -----------------------------------------------------------------------


def status_line_settings(state: Path) -> str:
    """The `--settings` JSON that makes Claude Code show `state`'s text as its status line."""
    command = f"cat {shlex.quote(str(state))} 2>/dev/null"
    return json.dumps({"statusLine": {"type": "command", "command": command, "refreshInterval": STATUS_REFRESH_S}})


def _settings_files(env: Mapping[str, str], cwd: Path) -> list[Path]:
    config_dir = env.get("CLAUDE_CONFIG_DIR")
    home = env.get("HOME")
    user = Path(config_dir).expanduser() if config_dir else (Path(home) if home else Path.home()) / ".claude"
    files = [user / "settings.json", *_MANAGED_SETTINGS]
    for folder in (cwd, *cwd.parents):
        files += [folder / ".claude" / "settings.json", folder / ".claude" / "settings.local.json"]
        if (folder / ".git").exists():
            break  # Claude Code's project settings are those of the working folder's project
    return files


def has_own_status_line(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> bool:
    """Whether the user set a status line (or passes settings of their own): then anyclaude sets none."""
    if any(arg == "--settings" or arg.startswith("--settings=") for arg in args):
        return True
    for path in _settings_files(env, cwd):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # missing or unreadable: Claude Code itself says what is wrong with it
        if isinstance(data, dict) and data.get("statusLine"):
            return True
    return False


class StatusFile:
    """The text the status-line command prints: progress while a prompt is read, else the model's name."""

    def __init__(self, board: Board, path: Path, idle: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.board = board
        self.path = path
        self.idle = idle
        self._clock = clock
        self._written: str | None = None

    def text(self) -> str:
        reading = self.board.current()
        now = self._clock()
        if reading is None or now - reading.opened < GRACE_S:
            return self.idle
        return progress_line(reading, now)

    def tick(self) -> None:
        text = self.text()
        if text == self._written:
            return
        try:
            write_private(self.path, text + "\n")
        except OSError:
            return  # a full or read-only disk costs the status line, not the session
        self._written = text

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def remove_stale_status_files(state_dir: Path) -> None:
    """Remove the status files of launchers that are gone (killed before they could remove their own)."""
    import psutil

    for path in state_dir.glob("statusline-*.txt"):
        pid = path.stem.removeprefix("statusline-")
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            path.unlink(missing_ok=True)


async def _keep_current(status: StatusFile) -> None:
    while True:
        status.tick()
        await asyncio.sleep(TICK_S)


async def run_interactive(
    run: Callable[[Sequence[str]], Awaitable[int]],
    args: Sequence[str],
    env: Mapping[str, str],
    state_dir: Path,
    model: str | None,
    board: Board = BOARD,
) -> int:
    """Run interactive Claude Code (`run` takes its arguments) with anyclaude's status line, unless the user
    has one; its exit status."""
    if has_own_status_line(args, env, Path.cwd()):
        return await run(args)
    remove_stale_status_files(state_dir)
    status = StatusFile(board, state_dir / f"statusline-{os.getpid()}.txt", model or "local model")
    status.tick()
    keeper = asyncio.create_task(_keep_current(status), name="status-line")
    try:
        return await run(["--settings", status_line_settings(status.path), *args])
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        status.remove()
