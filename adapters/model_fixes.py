"""Faults in shipped model files that keep a model from making tool calls: found, said, and repaired.

Two are known, both in the Qwen2.5-Coder releases (and every GGUF made from them):

1. **Markers the model writes as text, declared as tokens.** The tokenizer lists `<tool_call>` and
   `</tool_call>` as added tokens, so the template's instruction shows the model one token it never learned to
   write; the Coder models then answer with a ```json block or bare JSON (0 proper calls in 30 tries). With the
   markers left to ordinary tokenization, the instruction reads as the text the model did learn, and it copies it.
2. **Doubled braces in the template.** The instruction's example call is written `{{"name": ...}}` inside a
   Jinja string literal, where braces are not escapes: the model sees doubled braces and copies them, which is
   not JSON.

Pure Python (json, re, jinja2 when rendering): `doctor` reads model folders with it without loading MLX.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.capabilities import chat_template

HERMES_MARKERS = frozenset({"<tool_call>", "</tool_call>"})

# The instruction's example call with doubled braces, as the template source spells it (quotes escaped or not).
_DOUBLED_EXAMPLE = re.compile(r'\{\{(\\?"name\\?": <function-name>, \\?"arguments\\?": <args-json-object>)\}\}')


def markers_as_text(arch: str, name: str) -> frozenset[str]:
    """The tool-call markers a model of this family writes as text rather than as single tokens.

    Args:
        arch: the architecture (GGUF `general.architecture` or config.json `model_type`).
        name: the model's name (GGUF `general.name`/`basename`, or the folder's name).
    """
    if arch.lower().startswith("qwen2") and "coder" in name.lower():
        return HERMES_MARKERS
    return frozenset()


def repair_template(template: str) -> tuple[str, bool]:
    """The template with the example call's doubled braces made single; True when something changed."""
    fixed = _DOUBLED_EXAMPLE.sub(r"{\1}", template)
    return fixed, fixed != template


@dataclass(frozen=True)
class Fault:
    """One fault of a model folder: what it is, and what it does to tool calls."""

    what: str
    effect: str


def folder_faults(folder: Path) -> list[Fault]:
    """The known tool-call faults of the model folder `folder` (none when it is not a folder we can read)."""
    config = _read_json(folder / "config.json")
    arch = str(config.get("model_type", "")) if config else ""
    faults: list[Fault] = []
    markers = markers_as_text(arch, f"{folder.name} {config.get('_name_or_path', '') if config else ''}")
    declared = sorted(markers & _added_token_texts(folder))
    if declared:
        faults.append(
            Fault(
                f"tokenizer.json declares {' and '.join(declared)} as tokens",
                "this model family writes them as text, so it answers with ```json blocks instead of tool calls",
            )
        )
    template = chat_template(folder)
    if template is not None and repair_template(template)[1]:
        faults.append(
            Fault(
                "the chat template shows the example tool call with doubled braces ({{...}})",
                "the model copies them, and its calls are not JSON",
            )
        )
    return faults


def fix_folder(folder: Path) -> list[str]:
    """Repair the known faults of `folder` in place; returns what was changed (empty: nothing to do)."""
    config = _read_json(folder / "config.json") or {}
    markers = markers_as_text(str(config.get("model_type", "")), f"{folder.name} {config.get('_name_or_path', '')}")
    changed: list[str] = []
    tokenizer_path = folder / "tokenizer.json"
    tokenizer = _read_json(tokenizer_path)
    if tokenizer and markers:
        added = tokenizer.get("added_tokens") or []
        kept = [t for t in added if not (isinstance(t, dict) and t.get("content") in markers)]
        if len(kept) != len(added):
            tokenizer["added_tokens"] = kept
            _write_json(tokenizer_path, tokenizer)
            changed.append(f"{' and '.join(sorted(markers))} are ordinary text for the tokenizer")
        tokenizer_config_path = folder / "tokenizer_config.json"
        tokenizer_config = _read_json(tokenizer_config_path)
        decoder = tokenizer_config.get("added_tokens_decoder") if tokenizer_config else None
        if tokenizer_config and isinstance(decoder, dict):
            kept_decoder = {
                k: v for k, v in decoder.items() if not (isinstance(v, dict) and v.get("content") in markers)
            }
            if len(kept_decoder) != len(decoder):
                tokenizer_config["added_tokens_decoder"] = kept_decoder
                _write_json(tokenizer_config_path, tokenizer_config)
    if _repair_template_files(folder):
        changed.append("the template's example tool call has single braces")
    return changed


def _repair_template_files(folder: Path) -> bool:
    """Repair the template wherever the folder keeps one (mlx-lm reads chat_template.jinja first)."""
    repaired = False
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        fixed, did = repair_template(jinja.read_text(encoding="utf-8"))
        if did:
            jinja.write_text(fixed, encoding="utf-8")
            repaired = True
    config_path = folder / "tokenizer_config.json"
    config = _read_json(config_path)
    template = config.get("chat_template") if config else None
    if config and isinstance(template, str):
        fixed, did = repair_template(template)
        if did:
            config["chat_template"] = fixed
            _write_json(config_path, config)
            repaired = True
    return repaired


def _added_token_texts(folder: Path) -> set[str]:
    data = _read_json(folder / "tokenizer.json")
    added = data.get("added_tokens") if data else None
    if not isinstance(added, list):
        return set()
    return {str(t.get("content")) for t in added if isinstance(t, dict)}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
