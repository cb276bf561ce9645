"""Claude Code as anyclaude's child: finding it, the environment it gets, first-run state, and running it.

The environment (`claude_env`) starts from the user's own and only adds; a variable the user already set wins,
with one exception: `ANTHROPIC_BASE_URL` always points at the proxy, because that is what anyclaude is for.
Each variable below was checked against the Claude Code 2.1.197 binary; the failure it prevents:

- `ANTHROPIC_BASE_URL`: requests would go to api.anthropic.com instead of the proxy (set in every mode; in
  pass-through mode the proxy forwards to Anthropic, so nothing else is touched there).
- `ANTHROPIC_API_KEY`: without a key Claude Code opens its login screen; the placeholder (or the proxy's key)
  gets past it. Left alone when the user set `ANTHROPIC_AUTH_TOKEN`: then Claude Code sends that as a Bearer
  token and an extra key would only add a second credential to the request.
- `API_TIMEOUT_MS`: the per-request timeout (default 10 minutes) would abort a long local prefill.
- `CLAUDE_STREAM_IDLE_TIMEOUT_MS` (as long as `API_TIMEOUT_MS`): Claude Code 2.1.197 aborts a stream after
  300 s without an event, pings not counting, and retries it: a prompt that takes a slow machine longer than
  five minutes to read would never be answered (seen: Qwen2.5-Coder-1.5B on a busy 2-core CPU, 1,815 tokens).
- `CLAUDE_CODE_MAX_OUTPUT_TOKENS`: Claude Code asks for 32k-64k output tokens, more than a small context holds;
  a reply cut at `max_tokens` is retried three times and then shown as an error.
- `CLAUDE_CODE_AUTO_COMPACT_WINDOW` (and `CLAUDE_AUTOCOMPACT_PCT_OVERRIDE` below 100k tokens, the window's
  floor): Claude Code would assume a claude-* model's 200k window and only compact after the local model's
  context had overflowed. The threshold mirrors Claude Code's own: window - output reserve - 13k.
- `CLAUDE_CODE_ATTRIBUTION_HEADER=0`: the billing line in system block 0 changes with every conversation and
  would defeat the backend's prompt cache from the first token.
- `DISABLE_TELEMETRY`, `DISABLE_ERROR_REPORTING`, `DISABLE_AUTOUPDATER`, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`:
  background calls to Anthropic's services, which hang or fail offline and leak usage of a local setup.
- `DISABLE_COST_WARNINGS`: costs are priced as Anthropic models and mean nothing for a local one.

- `ANTHROPIC_MODEL` (the backend's model name, when the config maps no model ids): Claude Code's banner and
  `/status` would name a Claude model ("Opus 4.8 (1M context)") while a local model answers. The proxy sends
  every id it does not map to the backend's model, so the name changes what is shown, not where requests go.
  An unknown id gets Claude Code's default limits, which the output and compaction variables above correct.
  Claude Code 2.1.197 has no variable for the window it shows: `CLAUDE_CODE_MAX_CONTEXT_TOKENS` applies only
  with compaction disabled, which a small window cannot afford. With a `models` map in the config nothing is
  set: the Claude ids are then what routes each request.

No other model variable (`ANTHROPIC_DEFAULT_*_MODEL`, `ANTHROPIC_SMALL_FAST_MODEL`) is set: side requests keep
their Claude ids, which the proxy maps like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import AnyclaudeError
from launcher.loop import swapped_signal
from launcher.paths import write_private

PINNED_VERSION = "2.1.197"
INSTALL_COMMAND = f"npm install -g @anthropic-ai/claude-code@{PINNED_VERSION}"
PLACEHOLDER_API_KEY = "anyclaude-local"
# An hour: a cold 100k-token prefill on a laptop takes minutes, and the proxy's pings keep the stream alive.
API_TIMEOUT_MS = 3_600_000
# Claude Code's own defaults are 32k-64k; more than a quarter of a small context leaves no room for the prompt.
MAX_OUTPUT_CAP = 32_000
# Claude Code 2.1.197 internals the compaction settings are derived from (read from its binary).
_COMPACT_WINDOW_FLOOR = 100_000  # CLAUDE_CODE_AUTO_COMPACT_WINDOW is raised to at least this
_COMPACT_OUTPUT_RESERVE_CAP = 20_000  # the window minus min(max output, this) is the usable part
_COMPACT_BUFFER = 13_000  # compaction starts this far below the usable part
# Claude Code remembers an approved key by its last 20 characters.
_KEY_TAIL = 20
# What Claude Code itself writes for a project it has not seen (so later reads of these fields find them).
_NEW_PROJECT: dict[str, Any] = {
    "allowedTools": [],
    "mcpContextUris": [],
    "mcpServers": {},
    "enabledMcpjsonServers": [],
    "disabledMcpjsonServers": [],
    "hasTrustDialogAccepted": False,
    "projectOnboardingSeenCount": 0,
    "hasClaudeMdExternalIncludesApproved": False,
    "hasClaudeMdExternalIncludesWarningShown": False,
}
_SIGTERM_GRACE = 5.0


def find_claude(env: Mapping[str, str]) -> str | None:
    """The path of `claude` on `env`'s PATH, or None."""
    return shutil.which("claude", path=env.get("PATH", os.defpath))


def claude_version(path: str, timeout: float = 5.0) -> str | None:
    """The version `path --version` reports (e.g. "2.1.197"), or None when it cannot be run or parsed."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\b(\d+\.\d+\.\d+)\b", done.stdout)
    return found.group(1) if done.returncode == 0 and found else None


def not_installed_error() -> AnyclaudeError:
    """The error for a missing `claude`, with the pinned install command."""
    return AnyclaudeError(
        "Claude Code (`claude`) is not on PATH.",
        f"Install it with `{INSTALL_COMMAND}`, or run `anyclaude serve` to use the endpoint from another client.",
    )


@dataclass(frozen=True)
class ClaudeTarget:
    """Where Claude Code should send its requests, and what the model behind it can take."""

    proxy_url: str
    api_key: str | None
    local: bool
    model: str | None = None
    context_length: int | None = None
    max_output_tokens: int | None = None


def claude_env(base: Mapping[str, str], target: ClaudeTarget) -> dict[str, str]:
    """The full environment for `claude`: `base` plus anyclaude's settings, `base` winning except for the URL."""
    env = dict(base)
    env["ANTHROPIC_BASE_URL"] = target.proxy_url
    if not target.local:
        return env
    added: dict[str, str] = {
        "API_TIMEOUT_MS": str(API_TIMEOUT_MS),
        "CLAUDE_STREAM_IDLE_TIMEOUT_MS": str(API_TIMEOUT_MS),
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_COST_WARNINGS": "1",
    }
    if "ANTHROPIC_AUTH_TOKEN" not in base:
        added["ANTHROPIC_API_KEY"] = target.api_key or PLACEHOLDER_API_KEY
    if target.model:
        added["ANTHROPIC_MODEL"] = target.model
    max_output = target.max_output_tokens
    if max_output is None and target.context_length:
        max_output = min(MAX_OUTPUT_CAP, target.context_length // 4)
    if max_output:
        added["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_output)
    for name, value in added.items():
        env.setdefault(name, value)
    if target.context_length:
        for name, value in compaction_env(
            target.context_length, _int_or_none(env.get("CLAUDE_CODE_MAX_OUTPUT_TOKENS"))
        ):
            env.setdefault(name, value)
    return env


def compaction_env(context_length: int, max_output: int | None) -> list[tuple[str, str]]:
    """Variables that make Claude Code compact before `context_length` tokens overflow; [] when none can."""
    if context_length >= _COMPACT_WINDOW_FLOOR:
        return [("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(context_length))]
    # Below the floor the window stays at 100k, so the threshold is moved instead, as a share of the usable part.
    reserve = min(max_output or _COMPACT_OUTPUT_RESERVE_CAP, _COMPACT_OUTPUT_RESERVE_CAP)
    target = context_length - reserve - _COMPACT_BUFFER
    if target <= 0:
        return []  # too small for Claude Code's own prompt; nothing here can help
    percent = 100 * target / (_COMPACT_WINDOW_FLOOR - reserve)
    return [
        ("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(_COMPACT_WINDOW_FLOOR)),
        ("CLAUDE_AUTOCOMPACT_PCT_OVERRIDE", f"{max(1.0, percent):.1f}"),
    ]


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


# --- first-run state in ~/.claude.json ---------------------------------------------------------------------


def claude_json_path(env: Mapping[str, str]) -> Path:
    """Where Claude Code keeps its user state: `$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`."""
    config_dir = env.get("CLAUDE_CONFIG_DIR")
    if config_dir:
        return Path(config_dir).expanduser() / ".claude.json"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".claude.json"


def _load(claude_json: Path) -> dict[str, Any] | None:
    """The file's object; None when it does not exist. Raises AnyclaudeError when it is not a JSON object."""
    try:
        text = claude_json.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnyclaudeError(f"Cannot read {claude_json}: {exc.strerror}.", "Check its permissions.") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise AnyclaudeError(
            f"{claude_json} is not valid JSON ({exc.msg} at line {exc.lineno}).",
            "Fix it, or move it away to let Claude Code start afresh.",
        ) from exc
    if not isinstance(data, dict):
        raise AnyclaudeError(f"{claude_json} does not hold a JSON object.", "Move it away and try again.")
    return data


def _trusted(data: Mapping[str, Any], cwd: Path) -> bool:
    # Claude Code trusts a folder when it or any folder above it was accepted.
    projects = data.get("projects")
    if not isinstance(projects, dict):
        return False
    for folder in (cwd, *cwd.parents):
        entry = projects.get(str(folder))
        if isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
            return True
    return False


def _key_approved(data: Mapping[str, Any], api_key: str) -> bool:
    responses = data.get("customApiKeyResponses")
    approved = responses.get("approved") if isinstance(responses, dict) else None
    return isinstance(approved, list) and api_key[-_KEY_TAIL:] in approved


def onboarding_gaps(claude_json: Path, cwd: Path, api_key: str) -> list[str]:
    """What keeps interactive Claude Code from starting straight away; [] when nothing does.

    A missing file lacks everything. An empty `api_key` needs no approval (Claude Code asks only about one
    it finds in `ANTHROPIC_API_KEY`).
    """
    try:
        data = _load(claude_json)
    except AnyclaudeError as exc:
        return [exc.message]
    data = data or {}
    folder = cwd.resolve()
    gaps = []
    if data.get("hasCompletedOnboarding") is not True:
        gaps.append("the first-run setup (theme, sign-in) has not been completed")
    if api_key and not _key_approved(data, api_key):
        gaps.append(f"the API key ending in …{api_key[-4:]} has not been approved")
    if not _trusted(data, folder):
        gaps.append(f"the folder {folder} has not been trusted")
    return gaps


def complete_onboarding(claude_json: Path, cwd: Path, api_key: str) -> None:
    """Mark the first-run setup done, `api_key` approved and `cwd` trusted, keeping every other key.

    Writes atomically with mode 0600 (through a symlink to its target).

    Raises:
        AnyclaudeError: the file exists but cannot be read or is not a JSON object (it is left untouched).
    """
    data = _load(claude_json) or {}
    data["hasCompletedOnboarding"] = True
    if api_key:
        tail = api_key[-_KEY_TAIL:]
        responses = data.get("customApiKeyResponses")
        responses = dict(responses) if isinstance(responses, dict) else {}
        approved = [k for k in responses.get("approved") or [] if k != tail]
        rejected = [k for k in responses.get("rejected") or [] if k != tail]
        data["customApiKeyResponses"] = {**responses, "approved": [*approved, tail], "rejected": rejected}
    folder = str(cwd.resolve())
    projects = data.get("projects")
    projects = dict(projects) if isinstance(projects, dict) else {}
    entry = projects.get(folder)
    entry = dict(entry) if isinstance(entry, dict) else dict(_NEW_PROJECT)
    entry["hasTrustDialogAccepted"] = True
    entry["hasCompletedProjectOnboarding"] = True
    projects[folder] = entry
    data["projects"] = projects
    write_private(claude_json.resolve(), json.dumps(data, indent=2) + "\n")


def offer_onboarding(
    claude_json: Path, cwd: Path, api_key: str, interactive: bool, confirm: Callable[[str], bool]
) -> bool:
    """Ask to fill the gaps `onboarding_gaps` finds and fill them only on yes; whether Claude Code is ready now.

    Never edits the file without a yes, and never asks when not `interactive`.

    Raises:
        AnyclaudeError: the file exists but is not a JSON object (from `complete_onboarding`, after a yes).
    """
    gaps = onboarding_gaps(claude_json, cwd, api_key)
    if not gaps:
        return True
    if not interactive:
        return False
    question = f"Claude Code would stop at its first-run screens: {'; '.join(gaps)}. Mark these done in {claude_json}?"
    if not confirm(question):
        return False
    complete_onboarding(claude_json, cwd, api_key)
    return True


# --- running claude in this terminal -------------------------------------------------------------------------


async def run_claude(
    path: str, args: Sequence[str], env: Mapping[str, str], on_sigint: Callable[[], None] = lambda: None
) -> int:
    """Run `claude` in this terminal until it exits; its exit status (128 + signal number after a signal).

    Claude Code shares our stdin/stdout/stderr and process group, so it stays in the terminal's foreground
    group and gets Ctrl-C itself. Meanwhile:
    - SIGINT is ignored here: Ctrl-C is Claude Code's interrupt key and reaches both of us; it must not stop the
      proxy under a working session. A Python-level handler (not SIG_IGN) is used, so the child does not
      inherit an ignored SIGINT through exec; it calls `on_sigint`.
    - SIGTERM is forwarded to Claude Code, so `kill <anyclaude>` ends the session; the caller's own shutdown
      runs after this returns, once nothing uses the proxy any more.
    Both handlers are restored afterwards. Cancelling this coroutine terminates Claude Code before re-raising.

    Raises:
        OSError: `path` cannot be executed.
    """
    loop = asyncio.get_running_loop()
    proc: asyncio.subprocess.Process | None = None
    sigterm_before_start = False

    def forward_sigterm() -> None:
        nonlocal sigterm_before_start
        if proc is None:
            sigterm_before_start = True
        elif proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    # The handlers go in before the spawn: a Ctrl-C just after it must not reach the old SIGINT handler.
    with swapped_signal(loop, signal.SIGINT, on_sigint), swapped_signal(loop, signal.SIGTERM, forward_sigterm):
        proc = await asyncio.create_subprocess_exec(path, *args, env=dict(env), start_new_session=False)
        if sigterm_before_start:
            forward_sigterm()
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            await _stop(proc)
            raise
    return 128 - code if code < 0 else code


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, a grace period, then SIGKILL: a cancelled run must not leave Claude Code holding the terminal."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), _SIGTERM_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
