"""Claude Code's first-run state on real files, and `run_claude` with a fake `claude` in a real child process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from launcher.claude import (
    PINNED_VERSION,
    claude_version,
    complete_onboarding,
    find_claude,
    offer_onboarding,
    onboarding_gaps,
    run_claude,
)
from launcher.loop import add_signal_handler, remove_signal_handler, run
from tests.harness import wait_until

KEY = "sk-ant-local-0123456789abcdefghijklmnop"
TAIL = KEY[-20:]


# --- onboarding ---------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


def test_a_missing_file_lacks_everything(tmp_path: Path, project: Path) -> None:
    gaps = onboarding_gaps(tmp_path / ".claude.json", project, KEY)
    assert len(gaps) == 3
    assert any("first-run" in gap for gap in gaps)
    assert any("…mnop" in gap for gap in gaps)
    assert any(str(project) in gap for gap in gaps)


def test_complete_onboarding_creates_the_structure_claude_code_reads(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    complete_onboarding(claude_json, project, KEY)
    data = json.loads(claude_json.read_text())
    assert data["hasCompletedOnboarding"] is True
    assert data["customApiKeyResponses"] == {"approved": [TAIL], "rejected": []}
    entry = data["projects"][str(project.resolve())]
    assert entry["hasTrustDialogAccepted"] is True
    assert entry["hasCompletedProjectOnboarding"] is True
    assert entry["allowedTools"] == []
    assert stat.S_IMODE(claude_json.stat().st_mode) == 0o600
    assert onboarding_gaps(claude_json, project, KEY) == []


def test_complete_onboarding_keeps_unrelated_keys_and_tightens_the_mode(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    other = str(tmp_path / "other")
    existing = {
        "theme": "dark",
        "numStartups": 7,
        "customApiKeyResponses": {"approved": ["someone-elses-key-tail"], "rejected": [TAIL]},
        "projects": {
            other: {"allowedTools": ["Bash"], "hasTrustDialogAccepted": True},
            str(project): {"allowedTools": ["Read"], "lastCost": 1.5},
        },
    }
    claude_json.write_text(json.dumps(existing))
    claude_json.chmod(0o644)
    complete_onboarding(claude_json, project, KEY)
    data = json.loads(claude_json.read_text())
    assert data["theme"] == "dark"
    assert data["numStartups"] == 7
    assert data["customApiKeyResponses"] == {"approved": ["someone-elses-key-tail", TAIL], "rejected": []}
    assert data["projects"][other] == existing["projects"][other]  # type: ignore[index]
    assert data["projects"][str(project)] == {
        "allowedTools": ["Read"],
        "lastCost": 1.5,
        "hasTrustDialogAccepted": True,
        "hasCompletedProjectOnboarding": True,
    }
    assert stat.S_IMODE(claude_json.stat().st_mode) == 0o600


def test_partial_state_reports_only_what_is_missing(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    claude_json.write_text(json.dumps({"hasCompletedOnboarding": True}))
    gaps = onboarding_gaps(claude_json, project, KEY)
    assert len(gaps) == 2
    assert not any("first-run" in gap for gap in gaps)


def test_a_trusted_parent_folder_trusts_the_project(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    claude_json.write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "customApiKeyResponses": {"approved": [TAIL], "rejected": []},
                "projects": {str(tmp_path.resolve()): {"hasTrustDialogAccepted": True}},
            }
        )
    )
    assert onboarding_gaps(claude_json, project, KEY) == []


def test_no_key_needs_no_approval(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    complete_onboarding(claude_json, project, "")
    assert "customApiKeyResponses" not in json.loads(claude_json.read_text())
    assert onboarding_gaps(claude_json, project, "") == []


def test_a_file_that_is_not_json_is_reported_and_never_overwritten(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    claude_json.write_text("{not json")
    gaps = onboarding_gaps(claude_json, project, KEY)
    assert len(gaps) == 1
    assert "not valid JSON" in gaps[0]
    with pytest.raises(Exception, match="not valid JSON"):
        complete_onboarding(claude_json, project, KEY)
    assert claude_json.read_text() == "{not json"


def test_a_symlinked_file_is_updated_through_the_link(tmp_path: Path, project: Path) -> None:
    real = tmp_path / "dotfiles" / "claude.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"theme": "light"}))
    link = tmp_path / ".claude.json"
    link.symlink_to(real)
    complete_onboarding(link, project, KEY)
    assert link.is_symlink()
    assert json.loads(real.read_text())["theme"] == "light"
    assert onboarding_gaps(link, project, KEY) == []


def test_offer_onboarding_writes_nothing_without_a_yes(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    questions: list[str] = []

    def refuse(question: str) -> bool:
        questions.append(question)
        return False

    assert offer_onboarding(claude_json, project, KEY, interactive=True, confirm=refuse) is False
    assert len(questions) == 1
    assert str(claude_json) in questions[0]
    assert not claude_json.exists()

    def never(question: str) -> bool:
        raise AssertionError("asked while not interactive")

    assert offer_onboarding(claude_json, project, KEY, interactive=False, confirm=never) is False
    assert not claude_json.exists()


def test_offer_onboarding_applies_on_yes_and_does_not_ask_when_ready(tmp_path: Path, project: Path) -> None:
    claude_json = tmp_path / ".claude.json"
    assert offer_onboarding(claude_json, project, KEY, interactive=True, confirm=lambda _: True) is True
    assert onboarding_gaps(claude_json, project, KEY) == []

    def never(question: str) -> bool:
        raise AssertionError("asked although nothing is missing")

    assert offer_onboarding(claude_json, project, KEY, interactive=True, confirm=never) is True
    assert offer_onboarding(claude_json, project, KEY, interactive=False, confirm=never) is True


# --- finding and running claude -----------------------------------------------------------------------------


def fake_claude(folder: Path, body: str) -> Path:
    """An executable `claude` in `folder` running `body` as Python."""
    folder.mkdir(exist_ok=True)
    path = folder / "claude"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_find_claude_searches_the_given_path(tmp_path: Path) -> None:
    fake = fake_claude(tmp_path / "bin", "print('2.1.197 (Claude Code)')\n")
    assert find_claude({"PATH": f"{tmp_path / 'empty'}{os.pathsep}{fake.parent}"}) == str(fake)
    assert find_claude({"PATH": str(tmp_path / "empty")}) is None


def test_claude_version_parses_the_version_line(tmp_path: Path) -> None:
    good = fake_claude(tmp_path / "good", "print('2.1.197 (Claude Code)')\n")
    failing = fake_claude(tmp_path / "failing", "import sys\nprint('1.2.3')\nsys.exit(1)\n")
    assert claude_version(str(good)) == "2.1.197"
    assert claude_version(str(failing)) is None
    assert claude_version(str(tmp_path / "missing")) is None


def test_the_installed_claude_is_the_pinned_version() -> None:
    path = shutil.which("claude")
    if path is None:
        pytest.skip("Claude Code (`claude`) is not on PATH")
    assert claude_version(path, timeout=30.0) == PINNED_VERSION


def test_run_claude_passes_the_environment_and_the_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    fake = fake_claude(
        tmp_path / "bin",
        """
        import json, os, sys
        open(sys.argv[1], "w").write(json.dumps({"args": sys.argv[2:], "env": dict(os.environ)}))
        sys.exit(7)
        """,
    )
    env = {**os.environ, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "anyclaude-local"}
    code = asyncio.run(run_claude(str(fake), [str(out), "-p", "hi"], env))
    assert code == 7
    seen = json.loads(out.read_text())
    assert seen["args"] == ["-p", "hi"]
    assert seen["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert seen["env"]["ANTHROPIC_API_KEY"] == "anyclaude-local"


def test_ctrl_c_goes_to_claude_and_not_to_anyclaude(tmp_path: Path) -> None:
    # The child plays the terminal: SIGINT to its parent (us), then a moment for it to be handled, then exit 0.
    fake = fake_claude(
        tmp_path / "bin",
        """
        import os, signal, time
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(0.3)
        """,
    )

    async def main() -> tuple[int, object]:
        before = signal.getsignal(signal.SIGINT)
        code = await run_claude(str(fake), [], dict(os.environ))
        assert signal.getsignal(signal.SIGINT) is before
        return code, before

    code, _ = asyncio.run(main())
    assert code == 0


def test_the_child_gets_the_default_sigint_disposition(tmp_path: Path) -> None:
    out = tmp_path / "disposition"
    fake = fake_claude(
        tmp_path / "bin",
        """
        import signal, sys
        open(sys.argv[1], "w").write(str(signal.getsignal(signal.SIGINT) is signal.default_int_handler))
        """,
    )
    assert asyncio.run(run_claude(str(fake), [str(out)], dict(os.environ))) == 0
    assert out.read_text() == "True"  # SIGINT was not inherited as ignored: Ctrl-C still works in claude


def test_a_signal_death_is_128_plus_the_signal(tmp_path: Path) -> None:
    fake = fake_claude(tmp_path / "bin", "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    assert asyncio.run(run_claude(str(fake), [], dict(os.environ))) == 128 + signal.SIGTERM


def test_sigterm_to_anyclaude_is_forwarded_and_the_loop_handler_restored(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    fake = fake_claude(
        tmp_path / "bin",
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))
        open(sys.argv[1], "w").close()
        time.sleep(20)
        sys.exit(1)
        """,
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        shutdowns: list[str] = []
        add_signal_handler(loop, signal.SIGTERM, shutdowns.append, "runtime")  # as the runtime installs its own
        try:
            task = asyncio.create_task(run_claude(str(fake), [str(ready)], dict(os.environ)))
            await asyncio.to_thread(wait_until, ready.exists, 10.0, 0.02, "the fake claude to start")
            os.kill(os.getpid(), signal.SIGTERM)
            code = await asyncio.wait_for(task, 10.0)
            assert shutdowns == []  # ours was replaced while claude ran
            os.kill(os.getpid(), signal.SIGTERM)  # and is back afterwards
            for _ in range(500):
                if shutdowns:
                    break
                await asyncio.sleep(0.01)
            assert shutdowns == ["runtime"]
            return code
        finally:
            remove_signal_handler(loop, signal.SIGTERM)

    assert run(main()) == 42  # on the loop the runtime uses


def test_cancelling_run_claude_ends_claude(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    fake = fake_claude(
        tmp_path / "bin",
        """
        import sys, time
        open(sys.argv[1], "w").close()
        time.sleep(20)
        """,
    )

    async def main() -> None:
        task = asyncio.create_task(run_claude(str(fake), [str(ready)], dict(os.environ)))
        await asyncio.to_thread(wait_until, ready.exists, 10.0, 0.02, "the fake claude to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())  # the leak finaliser fails the test if the child outlived it
