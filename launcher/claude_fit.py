"""Claude Code fitted to the model behind it: which tools it offers and which system prompt it sends.

Claude Code 2.1.197's full request is ~20k tokens: 24 tools' schemas (~64 KB) and a ~6 KB system prompt. A large
model carries that; a small one does not. Measured on Qwen2.5-Coder-1.5B (bench/agent.py, FACTS): at ~3,400
prompt tokens it mostly refuses ("I don't have access to the file") or writes ```json blocks, while at ~1,800
(Read, Edit and Bash with a compact system prompt) it makes the right call nearly every time. So:

- a model that cannot call tools (its template drops them) gets no tools at all (`--tools ""`): offered tools it
  cannot call, it would invent their results;
- a small model (`ModelFacts.small`: under 4B parameters, or a window under 32k tokens, too small for the full
  prompt and a working conversation) gets `LEAN_TOOLS` and the compact system prompt below;
- any other model gets Claude Code as it is, with the per-folder sections (working directory, git status, date)
  moved out of the system prompt (`--exclude-dynamic-system-prompt-sections`), so the cached prompt serves every
  folder.

Each choice is a backend's `claude` setting (`tools`, `systemPrompt`, `excludeDynamicSections`) and what the
person passed to `claude` wins: `--tools`, `--system-prompt` or `--system-prompt-file` given
after `--` turns the matching choice off.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.facts import ModelFacts

LEAN_TOOLS = ("Read", "Edit", "Bash")
# Prompt tokens of Claude Code 2.1.197's first request ("hi"), counted with Qwen2.5's tokenizer: each tool's
# schema as a chat template renders it, the system prompt and the first user message with its reminders.
FULL_PROMPT_TOKENS = 19_400
_TOOL_TOKENS = {"Read": 484, "Edit": 259, "Write": 175, "Bash": 746, "Glob": 189, "Grep": 872}
# The same with each description cut to its first sentence, as the proxy sends them to a small model.
_SHORT_TOOL_TOKENS = {"Read": 234, "Edit": 183, "Write": 135, "Bash": 207, "Glob": 112, "Grep": 524}
_COMPACT_PROMPT_TOKENS = 280
_DEFAULT_PROMPT_TOKENS = 1_450  # the default system prompt with the per-folder sections moved out

_TOOL_RULES = {
    "Read": "Read: see a file (its absolute path). Never guess what a file holds.",
    "Edit": "Edit: change a file, only when the user asks for a change. Read it first; copy old_string exactly.",
    "Write": "Write: create a file with its absolute path and the whole content, only when asked to.",
    "Bash": "Bash: run a command (ls, grep, find, wc, git, python, tests) and report what it printed.",
    "Glob": "Glob: find files by name with a pattern such as **/*.py.",
    "Grep": "Grep: search file contents with a regular expression.",
}


@dataclass(frozen=True)
class ClaudeFit:
    """The arguments anyclaude adds to Claude Code's command line, and the start line that says so."""

    args: tuple[str, ...]
    summary: str | None


def fit_claude(
    facts: ModelFacts,
    *,
    tools: str | list[str],
    system_prompt: str,
    exclude_dynamic_sections: bool,
    user_args: Sequence[str],
    cwd: Path,
) -> ClaudeFit:
    """Choose Claude Code's tools and system prompt for the model `facts` describe.

    Args:
        facts: the backend's model facts (whether it calls tools, whether it is small).
        tools: "auto", "all", a comma-separated list or a list ("" or []: none).
        system_prompt: "auto", "default", "compact", or the path of a file holding the prompt.
        exclude_dynamic_sections: pass `--exclude-dynamic-system-prompt-sections` with the default prompt.
        user_args: what the person passes to `claude` (their choices win).
        cwd: the folder Claude Code works in (named in the compact prompt).
    """
    small = facts.small
    chosen_tools = _tools(tools, facts.calls_tools, small)
    user_tools = any(a.split("=", 1)[0] == "--tools" for a in user_args)
    user_prompt = any(a.split("=", 1)[0] in ("--system-prompt", "--system-prompt-file") for a in user_args)
    args: list[str] = []
    said: list[str] = []
    if chosen_tools is not None and not user_tools:
        args += ["--tools", ",".join(chosen_tools)]
        said.append(f"tools {', '.join(chosen_tools)}" if chosen_tools else "no tools (the model cannot call them)")
    prompt = "default" if user_prompt else _prompt_kind(system_prompt, small or chosen_tools == [])
    if not user_prompt and prompt == "compact":
        args += ["--system-prompt", compact_prompt(LEAN_TOOLS if chosen_tools is None else chosen_tools, cwd)]
        said.append("compact system prompt")
    elif not user_prompt and prompt not in ("default", "compact"):
        path = Path(prompt).expanduser()
        args += ["--system-prompt", path.read_text(encoding="utf-8")]
        said.append(f"system prompt from {path}")
    elif not user_prompt and exclude_dynamic_sections:
        args.append("--exclude-dynamic-system-prompt-sections")
    if not said:
        return ClaudeFit(tuple(args), None)
    size = prompt_estimate(chosen_tools, prompt, short=small)  # the proxy shortens a small model's tools
    return ClaudeFit(tuple(args), f"Claude Code: {'; '.join(said)} (~{size:,} prompt tokens)")


def compact_prompt(tools: Sequence[str], cwd: Path) -> str:
    """anyclaude's own short system prompt: the rules of the offered tools and the working folder."""
    rules = [f"- {_TOOL_RULES[name]}" for name in tools if name in _TOOL_RULES]
    if not tools:
        return (
            f"You are a helpful assistant in a terminal, in the folder {cwd}. You have no tools: you cannot read "
            "or edit files or run commands. When asked to, say so plainly and show the command the user could run; "
            "never make up a file's contents or a command's output. Answer briefly."
        )
    # The folder is named first, as Claude Code's own prompt does: with it last, Qwen2.5-Coder-1.5B called a tool
    # to answer "What is 2 + 3?" (bench/agent.py). The cache then serves a new folder only the first ~50 tokens.
    lines = [
        f"You are a coding agent in a terminal on {platform.system()}, working in the folder {cwd}. Use the tools "
        "to look at files and run commands:",
        *rules,
        f"Paths are absolute: a file notes.txt in this folder is {cwd / 'notes.txt'}.",
        "Call one tool at a time. As soon as a tool's result answers the user, stop calling tools and reply with "
        "the answer in one short sentence. Never make up a tool's result.",
    ]
    return "\n".join(lines)


def prompt_estimate(tools: Sequence[str] | None, prompt: str, short: bool = False) -> int:
    """Roughly how many prompt tokens Claude Code's first request has with these choices (for the start line)."""
    if tools is None:
        return FULL_PROMPT_TOKENS
    system = _COMPACT_PROMPT_TOKENS if prompt == "compact" else _DEFAULT_PROMPT_TOKENS
    sizes = _SHORT_TOOL_TOKENS if short else _TOOL_TOKENS
    return system + sum(sizes.get(name, 500) for name in tools)


def _tools(setting: str | list[str], can_call: bool | None, small: bool) -> list[str] | None:
    """The tool list to pass, or None for Claude Code's own (all)."""
    if isinstance(setting, list):
        return list(setting)
    if setting == "all":
        return None
    if setting != "auto":
        return [name.strip() for name in setting.split(",") if name.strip()]
    if can_call is False:
        return []
    return list(LEAN_TOOLS) if small else None


def _prompt_kind(setting: str, lean: bool) -> str:
    if setting != "auto":
        return setting
    return "compact" if lean else "default"
