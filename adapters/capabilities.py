"""What a local model can do for Claude Code, decided once from its files: can it call tools?

Claude Code is an agent: it reads files and runs commands through tools. A model can call them only when its
chat template renders the request's `tools` (the definitions reach the prompt); a template that never reads
`tools` drops them, and the model, never told a tool exists, answers in prose or repeats itself. Whether a
tool-call parser exists is secondary: without the definitions in the prompt there is nothing to parse.

The decision reads the chat template's variables with jinja2's own parser (not a text search, so a comment or a
string saying "tools" does not count). It reads files only: `doctor`, `status` and the start line use it without
loading the model. A GGUF file, a remote model or a folder without a template is "unknown" (None), never a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
NO_TOOLS_FIX = (
    "Claude Code can chat with it but cannot read files, edit or run commands. For agent work, use a model whose "
    "chat template renders tools (e.g. Qwen3-Coder, Qwen2.5-Coder-Instruct, Llama 3.1+ Instruct)."
)


@dataclass(frozen=True)
class ToolSupport:
    """Whether a model can call tools (None: cannot be told from its files) and the reason, in a few words."""

    can_call: bool | None
    why: str

    @property
    def label(self) -> str:
        """`yes`, `no` or `?`, for a table column."""
        return {True: "yes", False: "no", None: "?"}[self.can_call]


def tool_support(model: str | None) -> ToolSupport:
    """Whether the local model folder `model` can call tools, judged from its chat template."""
    if not model:
        return ToolSupport(None, "no model path")
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return ToolSupport(None, "not a local model folder")
    template = chat_template(folder)
    if template is None:
        return ToolSupport(False, "it has no chat template, so tool definitions never reach it")
    if "tools" in template_variables(template):
        return ToolSupport(True, "its chat template renders tool definitions")
    return ToolSupport(False, "its chat template drops tool definitions")


def chat_template(folder: Path) -> str | None:
    """The model's chat template: `chat_template.jinja`, else the one in `tokenizer_config.json` (the default
    of a named list); None when it has none."""
    try:
        return (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass  # none of its own: the tokenizer config may hold one
    try:
        config = json.loads((folder / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(found, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("tool_use") or named.get("default")
    return found if isinstance(found, str) and found.strip() else None


def template_variables(template: str) -> set[str]:
    """The variables a Jinja template reads from its context (a regex fallback when jinja2 cannot parse it)."""
    try:
        import jinja2
        import jinja2.meta

        return set(jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template)))
    except Exception:  # jinja2 missing, or a template using an extension we do not load
        return set(re.findall(r"\b[A-Za-z_]\w*\b", re.sub(r"\{#.*?#\}", "", template, flags=re.S)))


def no_tools_note(name: str | None, model: str | None) -> str | None:
    """The start-up line for a model (served as `name`) that cannot call tools; None when it can or nobody can
    tell."""
    found = tool_support(model)
    if found.can_call is not False:
        return None
    return f"! {name} cannot call tools ({found.why}). {NO_TOOLS_FIX}"
