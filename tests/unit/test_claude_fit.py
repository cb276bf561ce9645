"""Claude Code fitted to the model: tools and system prompt chosen from the model's files and the config."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from adapters.facts import SMALL_MODEL_PARAMS, ModelFacts, model_facts, model_params
from launcher.claude_fit import LEAN_TOOLS, compact_prompt, fit_claude
from launcher.config import BackendConfig

TOOLS_TEMPLATE = (
    "{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"
)
NO_TOOLS_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def model_folder(tmp_path: Path, *, template: str, params: int, name: str = "model") -> Path:
    """A model folder as far as the fitting reads it: a template, and safetensors holding `params` values."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "chat_template.jinja").write_text(template)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    # Only the header is read: it names each tensor's shape, so a billion parameters need no gigabytes here.
    header = json.dumps({"w": {"dtype": "I8", "shape": [params // 1000, 1000], "data_offsets": [0, params]}})
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode())
    return folder


def facts_of(model: Path | str) -> ModelFacts:
    return model_facts(BackendConfig.model_validate({"model": str(model)}))


def fit(model: Path | str, *user_args: str, **claude: object) -> tuple[str, ...]:
    settings: dict[str, object] = {"tools": "auto", "system_prompt": "auto", "exclude_dynamic_sections": True}
    settings.update(claude)
    return fit_claude(
        facts_of(model),
        tools=settings["tools"],  # type: ignore[arg-type]
        system_prompt=str(settings["system_prompt"]),
        exclude_dynamic_sections=bool(settings["exclude_dynamic_sections"]),
        user_args=user_args,
        cwd=Path("/work/proj"),
    ).args


def test_model_params_are_read_from_safetensors_headers(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=2_000_000)
    assert model_params(str(folder)) == 2_000_000
    assert model_params(str(tmp_path / "absent")) is None


def test_a_small_tool_model_gets_the_lean_tools_and_the_compact_prompt(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=1_000_000)

    args = fit(folder)

    assert args[:2] == ("--tools", ",".join(LEAN_TOOLS))
    assert args[2] == "--system-prompt"
    assert "/work/proj" in args[3] and "copy old_string exactly" in args[3]
    assert "--exclude-dynamic-system-prompt-sections" not in args


def test_a_model_that_cannot_call_tools_gets_none_and_is_told_so(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, template=NO_TOOLS_TEMPLATE, params=1_000_000)

    result = fit_claude(
        facts_of(folder),
        tools="auto",
        system_prompt="auto",
        exclude_dynamic_sections=True,
        user_args=(),
        cwd=Path("/p"),
    )

    assert result.args[:2] == ("--tools", "")
    assert "You have no tools" in result.args[3]
    assert result.summary is not None and "no tools (the model cannot call them)" in result.summary


def test_a_large_model_keeps_claude_codes_prompt_with_folder_sections_moved(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=SMALL_MODEL_PARAMS + 1000, name="large")

    assert fit(folder) == ("--exclude-dynamic-system-prompt-sections",)
    assert fit(folder, exclude_dynamic_sections=False) == ()
    assert fit("some-remote-model") == ("--exclude-dynamic-system-prompt-sections",)


@pytest.mark.parametrize("user", ["--tools", "--tools=Read"])
def test_the_users_own_tool_choice_wins(tmp_path: Path, user: str) -> None:
    folder = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=1_000_000)
    assert "--tools" not in fit(folder, user, "Read")


@pytest.mark.parametrize("user", ["--system-prompt", "--system-prompt-file"])
def test_the_users_own_system_prompt_wins_and_no_flag_is_added(tmp_path: Path, user: str) -> None:
    folder = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=SMALL_MODEL_PARAMS + 1000, name="large")
    assert fit(folder, user, "x") == ()
    small = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=1000, name="small")
    assert "--system-prompt" not in fit(small, user, "x")


def test_config_settings_override_the_choice(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, template=TOOLS_TEMPLATE, params=1_000_000)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Be terse.")

    assert fit(folder, tools="all", system_prompt="default") == ("--exclude-dynamic-system-prompt-sections",)
    assert fit(folder, tools=["Read", "Grep"], system_prompt=str(prompt)) == (
        "--tools",
        "Read,Grep",
        "--system-prompt",
        "Be terse.",
    )
    assert fit(folder, tools="")[:2] == ("--tools", "")


def test_compact_prompt_names_only_the_offered_tools() -> None:
    text = compact_prompt(["Read", "Bash"], Path("/w"))
    assert "- Read: see a file" in text and "- Bash: run a command" in text and "Edit" not in text
    assert "/w/notes.txt" in text


def test_a_small_window_makes_a_model_small_whatever_its_size() -> None:
    assert ModelFacts(params=SMALL_MODEL_PARAMS * 2, context_length=16384).small
    assert not ModelFacts(params=SMALL_MODEL_PARAMS * 2, context_length=131072).small
    assert not ModelFacts().small  # nothing known: Claude Code as it is
