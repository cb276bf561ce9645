"""The options every command that reads the config takes (`--mode`, `--config`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def config_options(func: F) -> F:
    func = click.option(
        "--mode", "-m", metavar="NAME", help="Backend to use (default: $ANYCLAUDE_MODE, then `backend`)."
    )(func)
    return click.option(
        "--config",
        "config_path",
        "-c",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help="Config file (default: $ANYCLAUDE_CONFIG, ./.anyclauderc.json, ~/.anyclauderc.json).",
    )(func)
