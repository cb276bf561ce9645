"""The commands about files: `anyclaude models import`, `anyclaude config …`, `anyclaude rollback`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from launcher.cli_options import config_options
from launcher.errors import AnyclaudeError, ConfigNotFoundError

# ------------------------------------------------------------------------------------ models


@click.group()
def models() -> None:
    """Model folders for the MLX backends."""


@models.command("import")
@click.argument("gguf", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dtype", default="float32", show_default=True, help="float32 (fast on CPUs), float16 or bfloat16.")
def models_import(gguf: Path, dest: Path, dtype: str) -> None:
    """Convert a llama or Qwen2 GGUF file (any quantization) into an MLX model folder (no torch, no network)."""
    from rich.progress import Progress as Bar

    from adapters.mlx_server.gguf_import import import_gguf

    with Bar(transient=True) as bar:
        task = bar.add_task("importing", total=1.0)

        def progress(stage: str, fraction: float) -> None:
            bar.update(task, description=stage, completed=fraction)

        try:
            out = import_gguf(gguf, dest, dtype=dtype, progress=progress)
        except ValueError as exc:
            raise AnyclaudeError(f"{gguf}: {exc}") from None
    from adapters.mlx_server.gguf_import import import_fixes

    for fix in import_fixes(out):
        click.echo(f"Fixed for tool calls: {fix}.")
    click.echo(f'Imported {gguf.name} into {out}. Use it with: "model": "{out}"')


@models.command("fix")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def models_fix(folder: Path) -> None:
    """Repair a model folder's known tool-call faults in place (Qwen2.5-Coder's markers and template)."""
    from adapters.model_fixes import fix_folder, folder_faults

    faults = folder_faults(folder)
    if not faults:
        click.echo(f"{folder}: no known tool-call fault; nothing to do.")
        return
    for fault in faults:
        click.echo(f"Found: {fault.what} ({fault.effect}).")
    for change in fix_folder(folder):
        click.echo(f"Fixed: {change}.")


# ------------------------------------------------------------------------------------ config


@click.group()
def config() -> None:
    """Inspect and check the config file."""


@config.command("path")
@config_options
def config_path_cmd(config_path: str | None, mode: str | None) -> None:
    """Print which config file is used."""
    import os

    from launcher.config import find_config

    found = find_config(config_path, os.environ, Path.cwd())
    if found is None:
        raise ConfigNotFoundError(
            "No config file found.", hint="Write one here with `anyclaude init` (the full example)."
        )
    click.echo(str(found.absolute()))


@config.command("validate")
@config_options
def config_validate(config_path: str | None, mode: str | None) -> None:
    """Check the config file and what it names, starting nothing: model paths and scripts exist, ports are free
    or held by this anyclaude's own backends. Problems are said as `doctor` says them; exit 1 on any."""
    import os
    import sys

    import adapters  # noqa: F401
    from adapters.base import AdapterError, CheckStatus, launch_spec
    from launcher.config import load_settings
    from launcher.control import survey
    from launcher.doctor.configuration import config_checks
    from launcher.doctor.report import mask, plain
    from launcher.errors import ConfigError
    from launcher.paths import Home

    settings = load_settings(config_path, mode)
    for name, entry in settings.config.backends.items():
        if not entry.enabled and name != settings.mode:
            continue
        try:
            launch_spec(name, settings.config)
        except AdapterError as exc:
            raise ConfigError(f"{settings.path}: {exc}", hint="Fix that backend entry.") from None
    checks, secrets = config_checks(str(settings.path), mode, os.environ, Path.cwd(), survey(Home.from_env()))
    problems = [c for c in mask(checks, secrets) if c.status is CheckStatus.FAIL]
    if problems:
        click.echo(f"{settings.path}: {len(problems)} problem(s) found", err=True)
        click.echo(plain(problems), nl=False, err=True)
        sys.exit(1)
    enabled = sum(1 for e in settings.config.backends.values() if e.enabled)
    click.echo(
        f"{settings.path}: valid ({len(settings.config.backends)} backends, {enabled} enabled; mode {settings.mode})"
    )


@config.command("show")
@config_options
def config_show(config_path: str | None, mode: str | None) -> None:
    """Print the config as anyclaude reads it (defaults filled in, secrets masked)."""
    from launcher.config import load_settings
    from launcher.masking import masked_view

    settings = load_settings(config_path, mode)
    # Masked after ${VAR} expansion: a key taken from the environment is as secret as one in the file.
    data = masked_view(settings.config.model_dump(mode="json", by_alias=True, exclude_none=True))
    click.echo(json.dumps({"file": str(settings.path), "mode": settings.mode, "config": data}, indent=2))


@config.command("history")
@config_options
def config_history(config_path: str | None, mode: str | None) -> None:
    """List the configs anyclaude applied (newest first); `anyclaude rollback N` restores one."""
    import time

    from launcher.history import snapshots
    from launcher.paths import Home

    found = snapshots(Home.from_env())
    if not found:
        click.echo("No applied config has been kept yet.")
        return
    for index, snap in enumerate(found):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.saved_at))
        mark = "  (current)" if index == 0 else ""
        click.echo(f"{index:3d}  {when}  {snap.digest}{mark}")


@click.command()
@click.argument("index", type=int, default=1)
@config_options
def rollback(index: int, config_path: str | None, mode: str | None) -> None:
    """Write applied config number INDEX (default 1: the one before the current) back to the config file.

    A running anyclaude applies it as it applies any edit.
    """
    import os

    from launcher.config import find_config
    from launcher.history import rollback as do_rollback
    from launcher.paths import Home

    target = find_config(config_path, os.environ, Path.cwd())
    if target is None:
        raise ConfigNotFoundError("No config file to roll back.", hint="Pass --config PATH.")
    snap = do_rollback(Home.from_env(), target, index)
    click.echo(f"Wrote config #{index} ({snap.digest}) to {target}.")


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of .anyclauderc.json (for editors)."""
    from launcher.config import Config
    from launcher.config_schema import config_json_schema

    click.echo(json.dumps(config_json_schema(Config), indent=2))
