"""Small coding tasks for Claude Code's agent loop, judged from the file system and the answer, never from what
the model says it did. Shared by the agent-loop tests (tests/e2e/test_agent_loop.py) and bench/agent.py.

Each task writes its files into a fresh folder, gives Claude Code one prompt, and checks the outcome.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Pre-approves the tools in headless mode (-p cannot ask); `--dangerously-skip-permissions` is refused as root.
ALLOW = ("--allowedTools", "Read,Edit,Write,Bash,Glob,Grep")
# A model that loops (the same Read again and again) fails after this many turns instead of running on.
MAX_TURNS = 8


@dataclass(frozen=True)
class Task:
    """One task: files to write, the prompt, what kind of work it is, and the check of the outcome."""

    name: str
    kind: str  # read, grep, glob, edit, write, bash, two-step, answer
    prompt: str
    files: dict[str, str]
    check: Callable[[Path, str], bool]


def _answer_has(*words: str) -> Callable[[Path, str], bool]:
    return lambda _folder, answer: all(w.lower() in answer.lower() for w in words)


def _answer_number(number: int) -> Callable[[Path, str], bool]:
    """The number as a word of its own: not a digit of a longer number, a version or a path (the task folders'
    random names hold digits)."""
    pattern = re.compile(rf"(?<![\w./-]){number}(?![\w/-]|\.\d)")
    return lambda _folder, answer: pattern.search(answer) is not None


def _test_passes(test: str) -> Callable[[Path, str], bool]:
    def check(folder: Path, _answer: str) -> bool:
        done = subprocess.run([sys.executable, test], cwd=folder, capture_output=True, timeout=60, check=False)
        return done.returncode == 0

    return check


def _file_is(name: str, expected: str) -> Callable[[Path, str], bool]:
    def check(folder: Path, _answer: str) -> bool:
        path = folder / name
        return path.is_file() and path.read_text().strip() == expected

    return check


def _json_value(name: str, key: str, expected: object) -> Callable[[Path, str], bool]:
    def check(folder: Path, _answer: str) -> bool:
        try:
            return json.loads((folder / name).read_text()).get(key) == expected
        except (OSError, ValueError):
            return False

    return check


GREET = 'def greet(name):\n    return "Helo, " + name\n'
GREET_TEST = "from greet import greet\n\nassert greet('Ada') == 'Hello, Ada', greet('Ada')\nprint('ok')\n"
CALC = "def total(prices):\n    result = 0\n    for price in prices:\n        result -= price\n    return result\n"
CALC_TEST = "from calc import total\n\nassert total([2, 3]) == 5, total([2, 3])\nprint('ok')\n"
SETTINGS = "NAME = 'demo'\nDEBUG = True\nLEVEL = 3\n"
SETTINGS_TEST = "from settings import DEBUG\n\nassert DEBUG is False, DEBUG\nprint('ok')\n"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"

TASKS: tuple[Task, ...] = (
    Task(
        "read",
        "read",
        "What is the secret word in notes.txt? Answer with the word only.",
        {"notes.txt": "Shopping: eggs, milk.\nThe secret word is marmalade.\n"},
        _answer_has("marmalade"),
    ),
    Task(
        "read-config",
        "read",
        "Which port does server.ini set? Answer with the number only.",
        {"server.ini": "[server]\nhost = 127.0.0.1\nport = 8731\nworkers = 4\n"},
        _answer_number(8731),
    ),
    Task(
        "grep",
        "grep",
        "Which file in the src folder defines the function parse_header? Answer with the file name only.",
        {
            "src/alpha.py": "def load(path):\n    return open(path).read()\n",
            "src/beta.py": "import zlib\n\n\ndef parse_header(raw):\n    return raw[:4]\n",
            "src/gamma.py": "def save(path, data):\n    open(path, 'w').write(data)\n",
        },
        _answer_has("beta.py"),
    ),
    Task(
        "glob",
        "glob",
        "How many .py files are in the folder pkg (including subfolders)? Answer with the number only.",
        {"pkg/a.py": "", "pkg/b.py": "", "pkg/sub/c.py": "", "pkg/readme.md": "", "pkg/sub/data.txt": ""},
        _answer_number(3),
    ),
    Task(
        "edit",
        "edit",
        "Read calc.py, then fix its bug so that test_calc.py passes.",
        {"calc.py": CALC, "test_calc.py": CALC_TEST},
        _test_passes("test_calc.py"),
    ),
    Task(
        "edit-typo",
        "edit",
        "Read greet.py, then fix its typo so that test_greet.py passes.",
        {"greet.py": GREET, "test_greet.py": GREET_TEST},
        _test_passes("test_greet.py"),
    ),
    Task(
        "edit-flag",
        "edit",
        "Set DEBUG to False in settings.py so that test_settings.py passes.",
        {"settings.py": SETTINGS, "test_settings.py": SETTINGS_TEST},
        _test_passes("test_settings.py"),
    ),
    Task(
        "edit-json",
        "edit",
        'In settings.json, change "debug" from true to false.',
        {"settings.json": '{\n  "name": "demo",\n  "debug": true,\n  "level": 3\n}\n'},
        _json_value("settings.json", "debug", False),
    ),
    Task(
        "write",
        "write",
        "Create a file named hello.txt that contains exactly the text: hello world",
        {},
        _file_is("hello.txt", "hello world"),
    ),
    Task(
        "bash",
        "bash",
        "Run the command `python3 --version` and tell me the version it prints.",
        {},
        _answer_has(PY_VERSION),
    ),
    Task(
        "bash-count",
        "bash",
        "How many lines does data.csv have? Use wc -l and answer with the number only.",
        {"data.csv": "".join(f"{n},{n * n}\n" for n in range(17))},
        _answer_number(17),
    ),
    Task(
        "two-step",
        "two-step",
        "Read version.txt, then write the next version number (add one to it) into next.txt.",
        {"version.txt": "41\n"},
        _file_is("next.txt", "42"),
    ),
    Task(
        "question",
        "answer",
        "What is 2 + 3? Answer with the number only.",
        {},
        _answer_number(5),
    ),
)
BY_NAME = {task.name: task for task in TASKS}


@dataclass
class Run:
    """What one task's run produced: from Claude Code's stream-json output and the request log."""

    exit_code: int
    answer: str = ""
    is_error: bool = False
    subtype: str = ""  # the result's: "success", "error_max_turns", …
    turns: int = 0
    calls_made: int = 0
    calls_failed: int = 0  # tool results Claude Code marked as errors
    wall_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "input", "error": whether it failed}
    stderr: str = ""
    timed_out: bool = False

    @property
    def parse_failed(self) -> int:
        return sum(1 for r in self.requests if r.get("tool_parse_failed"))

    @property
    def text_calls(self) -> int:
        return sum(int(r.get("text_tool_calls") or 0) for r in self.requests)

    @property
    def bridge_errors(self) -> int:
        """Requests that failed in the proxy; the one cut short when the run was stopped at its time limit
        is not the proxy's."""
        failed = [r for r in self.requests if r.get("error_type")]
        if self.timed_out and self.requests and self.requests[-1].get("error_type") == "incomplete":
            failed = [r for r in failed if r is not self.requests[-1]]
        return len(failed)


def prepare(task: Task, folder: Path) -> Path:
    """Write the task's files into `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in task.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def run_claude(
    config: Path,
    folder: Path,
    prompt: str,
    *,
    home: Path,
    anyclaude_home: Path,
    extra: Sequence[str] = (),
    timeout: float = 900,
    max_turns: int = MAX_TURNS,
) -> Run:
    """Run `anyclaude -- -p PROMPT` in `folder` with stream-json output; parse the run and its request-log rows."""
    env = {**os.environ, "HOME": str(home), "ANYCLAUDE_HOME": str(anyclaude_home), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "launcher", "--config", str(config), "--", "-p", prompt]
    argv += ["--output-format", "stream-json", "--verbose", *ALLOW, "--max-turns", str(max_turns), *extra]
    started = time.time()
    proc = subprocess.Popen(
        argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n(timed out after {timeout:.0f} s)"
    run = Run(exit_code=proc.returncode, wall_s=time.time() - started, stderr=stderr, timed_out=timed_out)
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        _take(run, event)
    run.requests = request_rows(anyclaude_home, since=started)
    deadline = time.monotonic() + 15
    while timed_out and not any(r.get("error_type") for r in run.requests) and time.monotonic() < deadline:
        time.sleep(0.5)  # the request cut short is logged once the proxy sees its client gone
        run.requests = request_rows(anyclaude_home, since=started)
    return run


def _take(run: Run, event: dict[str, Any]) -> None:
    kind = event.get("type")
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), list) else []
    if kind == "assistant":
        for block in content:
            if block.get("type") == "tool_use":
                run.calls_made += 1
                run.calls.append({"id": block.get("id"), "name": block.get("name"), "input": block.get("input")})
    elif kind == "user":
        for block in content:
            if block.get("type") == "tool_result":
                run.calls_failed += bool(block.get("is_error"))
                for call in run.calls:
                    if call["id"] == block.get("tool_use_id"):
                        call["error"] = bool(block.get("is_error"))
    elif kind == "result":
        run.answer = str(event.get("result") or "")
        run.is_error = bool(event.get("is_error"))
        run.subtype = str(event.get("subtype") or "")
        run.turns = int(event.get("num_turns") or 0)


def request_rows(anyclaude_home: Path, since: float) -> list[dict[str, Any]]:
    """The request log's rows for /v1/messages since `since`, oldest first (empty when there is no log)."""
    path = anyclaude_home / "requests.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM requests WHERE started >= ? AND endpoint = 'messages' ORDER BY started", (since,)
        ).fetchall()
    return [dict(row) for row in rows]


def cause(task: Task, folder: Path, run: Run) -> str | None:
    """None when the task succeeded; else whose failure it was: launcher, bridge, parse, time (the run outlasted
    its limit while the model was still writing, every earlier request answered), or the model's choice (a
    wrong answer, a wrong call, or turns used up going round in circles)."""
    if task.check(folder, run.answer) and not run.is_error:
        return None
    if run.bridge_errors:
        return "bridge"
    if run.turns == 0 and not run.answer:  # no result from Claude Code at all
        return "time" if run.timed_out and run.requests else "launcher"
    if run.parse_failed:
        return "parse"
    return "model"
