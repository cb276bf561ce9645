"""Can a local model call tools? Decided once, from its chat template, and said where a person looks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.capabilities import tool_support
from launcher.abilities import start_note
from launcher.claude import ClaudeTarget, claude_env
from launcher.config import BackendConfig
from launcher.defaults import DEFAULT_MODE, default_config

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TOOLS_TEMPLATE = (
    "{% if tools %}{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% endif %}"
    "{% for message in messages %}{{ message['content'] }}{% endfor %}"
)


def model_folder(tmp_path: Path, template: str | None, in_tokenizer_config: bool = False) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    if template is not None and in_tokenizer_config:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    elif template is not None:
        (folder / "chat_template.jinja").write_text(template)
    return folder


def test_a_template_that_drops_tools_cannot_call_them(tmp_path: Path) -> None:
    found = tool_support(str(model_folder(tmp_path, SMOLLM2_TEMPLATE)))
    assert found.can_call is False and "drops tool definitions" in found.why


@pytest.mark.parametrize("in_tokenizer_config", [False, True])
def test_a_template_that_renders_tools_can_call_them(tmp_path: Path, in_tokenizer_config: bool) -> None:
    assert tool_support(str(model_folder(tmp_path, TOOLS_TEMPLATE, in_tokenizer_config))).can_call is True


def test_a_word_tools_in_a_comment_or_string_does_not_count(tmp_path: Path) -> None:
    template = "{# tools are not supported #}{{ 'no tools here' }}" + SMOLLM2_TEMPLATE
    assert tool_support(str(model_folder(tmp_path, template))).can_call is False


def test_what_the_files_cannot_tell_is_unknown(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert tool_support(str(gguf)).can_call is None
    assert tool_support("qwen/qwen3-coder").can_call is None
    assert tool_support(None).can_call is None


def test_the_start_line_says_when_the_model_cannot_call_tools(tmp_path: Path) -> None:
    cannot = BackendConfig(model=str(model_folder(tmp_path, SMOLLM2_TEMPLATE)), model_alias="SmolLM2")
    note = start_note(cannot)
    assert note is not None and note.startswith("! SmolLM2 cannot call tools") and "cannot read files" in note
    assert start_note(BackendConfig(model="qwen/qwen3-coder")) is None  # unknown: nothing said


def test_the_demo_model_caps_claude_codes_output_below_a_ramble(tmp_path: Path) -> None:
    entry = default_config(tmp_path).backends[DEFAULT_MODE]
    target = ClaudeTarget(
        "http://127.0.0.1:1", None, True, context_length=entry.context_length, max_output_tokens=entry.max_output_tokens
    )
    assert int(claude_env({}, target)["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) <= 256


def test_claude_code_is_told_the_models_name_unless_the_user_chose_one() -> None:
    target = ClaudeTarget("http://127.0.0.1:1", None, True, model="SmolLM2-135M-Instruct")
    assert claude_env({}, target)["ANTHROPIC_MODEL"] == "SmolLM2-135M-Instruct"
    assert claude_env({"ANTHROPIC_MODEL": "mine"}, target)["ANTHROPIC_MODEL"] == "mine"
    assert "ANTHROPIC_MODEL" not in claude_env({}, ClaudeTarget("http://127.0.0.1:1", None, False, model="x"))
