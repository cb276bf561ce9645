"""Which words `anyclaude` takes as its own subcommands, which go to Claude Code, and which it refuses."""

from __future__ import annotations

import click
import pytest

from launcher.cli import route


@pytest.mark.parametrize(("typed", "meant"), [("stauts", "status"), ("doctr", "doctor"), ("sevre", "serve")])
def test_a_mistyped_subcommand_is_refused_with_the_one_meant(typed: str, meant: str) -> None:
    with pytest.raises(click.UsageError, match=f"did you mean `{meant}`") as caught:
        route([typed])
    assert caught.value.exit_code == 2
    assert f"anyclaude -- {typed}" in caught.value.message  # how to send it as a prompt after all


def test_a_mistyped_subcommand_after_options_is_refused() -> None:
    with pytest.raises(click.UsageError, match="did you mean `logs`"):
        route(["--mode", "mlx", "lgos"])


@pytest.mark.parametrize(
    "argv",
    [
        ["hello"],
        ["fix the failing test"],
        ["--mode", "mlx", "explain", "this"],
        ["--", "stauts"],
        [],
    ],
)
def test_real_prompts_still_pass_through_to_claude(argv: list[str]) -> None:
    assert route(argv) == ["run", *argv]


def test_subcommands_stay_subcommands() -> None:
    assert route(["status", "--json"]) == ["status", "--json"]


@pytest.mark.parametrize(
    ("argv", "meant"),
    [(["--mod", "mlx"], "--mode"), (["--mdoe=mlx"], "--mode"), (["--confg", "x.json"], "--config"),
     (["run", "--mod", "mlx"], "--mode"), (["--helpp"], "--help")],
)  # fmt: skip
def test_a_mistyped_option_of_our_own_is_refused_with_the_one_meant(argv: list[str], meant: str) -> None:
    with pytest.raises(click.UsageError, match=f"did you mean `{meant}`") as caught:
        route(argv)
    assert caught.value.exit_code == 2
    assert "anyclaude -- " in caught.value.message  # how to send it to Claude Code after all


@pytest.mark.parametrize(
    "argv",
    [["--model", "opus"], ["--mcp-config", "m.json"], ["--", "--mod"], ["--mode", "mlx", "--print"], ["-p", "hi"]],
)
def test_claude_codes_own_options_go_to_claude_code(argv: list[str]) -> None:
    assert route(argv) == ["run", *argv]
