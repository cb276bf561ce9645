"""The `anyclaude` command. The only place that turns AnyclaudeError into an exit code.

Heavy modules (uvicorn, fastapi, mlx) are imported inside the commands that need them, so
`anyclaude --help` and `anyclaude status` stay fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from launcher import __version__
from launcher.cli_options import config_options
from launcher.errors import EXIT_RUNTIME, AnyclaudeError


class _Anyclaude(click.Group):
    """The `anyclaude` group; its help also lists the options of the default command (`run`)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        click.Command.format_options(self, ctx, formatter)  # the group's own options, not yet its commands
        command = self.commands.get("run")
        if command is not None:
            records = [p.get_help_record(ctx) for p in command.params if isinstance(p, click.Option)]
            with formatter.section("Options of `anyclaude [OPTIONS] [-- CLAUDE ARGS]` (the default command)"):
                formatter.write_dl([r for r in records if r is not None])
        self.format_commands(ctx, formatter)


@click.group(cls=_Anyclaude, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="anyclaude")
def cli() -> None:
    """Run Claude Code on a model on your own machine.

    `anyclaude [--mode NAME] [-- CLAUDE ARGS]` starts the backend from .anyclauderc.json (or the
    built-in default model), the proxy in front of it, and Claude Code on top. `anyclaude serve`
    does the same without Claude Code.
    """


# ------------------------------------------------------------------------------------ serve


@cli.command()
@config_options
@click.option("--dry-run", is_flag=True, help="Print the command line, health URL and API kind; start nothing.")
def serve(config_path: str | None, mode: str | None, dry_run: bool) -> None:
    """Start the backend and the proxy and keep them running until Ctrl-C (no Claude Code)."""
    from launcher.defaults import load_or_default, prepare
    from launcher.loop import run
    from launcher.progress import Progress
    from launcher.runtime import serve as run_serve

    settings = load_or_default(config_path, mode)
    if dry_run:
        _print_dry_run(settings)
        return
    ui = Progress()
    prepare(settings, ui)
    sys.exit(run(run_serve(settings, ui, mode)))


@cli.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@config_options
@click.argument("claude_args", nargs=-1, type=click.UNPROCESSED)
def run_cmd(config_path: str | None, mode: str | None, claude_args: tuple[str, ...]) -> None:
    """Start the backend and the proxy, then Claude Code on them (the default command).

    Arguments after `--` go to claude, e.g. `anyclaude --mode mlx -- -p "hello" --output-format json`.
    """
    from launcher.defaults import load_or_default, prepare
    from launcher.loop import run
    from launcher.progress import Progress
    from launcher.runtime import run_with_claude

    settings = load_or_default(config_path, mode)
    ui = Progress()
    prepare(settings, ui)
    sys.exit(run(run_with_claude(settings, ui, claude_args, mode)))


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing .anyclauderc.json.")
def init(force: bool) -> None:
    """Write a starter .anyclauderc.json here (every backend kind, commented) to point at your model."""
    from launcher.starter import write_starter

    path = write_starter(Path.cwd(), force)
    click.echo(f"Wrote {path}. Point backends.mlx.model at your model folder, then run: anyclaude")
    click.echo(
        "Pick a model that calls tools (the built-in demo model cannot: it only chats). By memory: 8-16 GB, "
        "Qwen2.5-Coder-1.5B/7B-Instruct (see backends.mlx-small: Claude Code gets a lean prompt a small model can "
        "follow); 32 GB or more, Qwen3-Coder-30B-A3B-Instruct 4-bit (backends.mlx)."
    )


def _print_dry_run(settings: Any) -> None:
    from launcher.redact import MASK, redact_argv, redact_text
    from launcher.stack import resolve_spec

    spec = resolve_spec(settings)
    secrets = spec.secrets
    click.echo(f"backend:  {spec.name} ({spec.kind})")
    if spec.argv:
        click.echo(f"command:  {' '.join(redact_argv(spec.argv, secrets))}")
    else:
        click.echo("command:  (nothing is started for this kind)")
    for key, value in sorted(spec.env.items()):
        from launcher.redact import is_secret_name

        shown = MASK if is_secret_name(key) else redact_text(value, secrets)
        click.echo(f"env:      {key}={shown}")
    click.echo(f"health:   {spec.health_url or '(none)'}")
    click.echo(f"base url: {spec.base_url}")
    click.echo(f"api:      {spec.api}")


# ------------------------------------------------------------------------------------ status / stop / restart


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the backends anyclaude runs, their state and circuit breaker."""
    from launcher.abilities import record_tools
    from launcher.control import survey
    from launcher.paths import Home

    home = Home.from_env()
    entries = survey(home)
    tools = {e.record.name: record_tools(e.record, home) for e in entries}
    if as_json:
        rows = [
            {
                "name": e.record.name,
                "kind": e.record.kind,
                "state": e.state,
                "reason": e.record.reason,
                "pid": e.record.pid if e.backend else None,
                "port": e.record.port,
                "launcher_pid": e.record.launcher_pid if e.launcher else None,
                "restarts": e.record.restarts,
                "breaker": e.record.breaker,
                "base_url": e.record.base_url,
                "log": e.record.log_path,
                "config_events": e.record.config_events if e.launcher else [],
                "can_call_tools": tools[e.record.name].can_call,
                "tools": tools[e.record.name].why,
            }
            for e in entries
        ]
        click.echo(json.dumps({"backends": rows}, indent=2))
        return
    if not entries:
        click.echo("Nothing is running. Start a backend with: anyclaude serve --mode NAME")
        return
    from rich.console import Console

    titles = ("backend", "kind", "state", "pid", "port", "restarts", "breaker", "tools", "reason")
    lines: list[tuple[str, ...]] = [
        (
            e.record.name,
            e.record.kind,
            e.state,
            str(e.record.pid or "-") if e.backend else "-",
            str(e.record.port or "-"),
            str(e.record.restarts),
            str(e.record.breaker.get("state", "-")),
            tools[e.record.name].label,
            e.record.reason,
        )
        for e in entries
    ]
    if sys.stdout.isatty():
        from rich.table import Table

        table = Table(*titles)
        for row in lines:
            colour = {"READY": "green", "DEGRADED": "yellow", "BACKOFF": "yellow", "FATAL": "red"}.get(row[2], "")
            table.add_row(*row[:2], f"[{colour}]{row[2]}[/{colour}]" if colour else row[2], *row[3:])
        console = Console()
        console.print(table)
    else:
        # Piped: plain aligned text at its full width, nothing cut (a pipe has no width to squeeze into).
        widths = [max(len(line[i]) for line in (titles, *lines)) for i in range(len(titles))]
        for line in (titles, *lines):
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        console = Console(soft_wrap=True, highlight=False)
    for name, found in tools.items():
        if found.can_call is False:
            console.print(f"[yellow]{name} cannot call tools: {found.why}.[/yellow]")
    _print_config_events(console, entries)


def _print_config_events(console: Any, entries: list[Any]) -> None:
    """Each running anyclaude's latest config edits (one list per launcher, from its newest state file)."""
    import time

    from rich.markup import escape

    newest: dict[int, Any] = {}
    for e in entries:
        if e.launcher and e.record.config_events:
            known = newest.get(e.record.launcher_pid)
            if known is None or e.record.updated_at > known.record.updated_at:
                newest[e.record.launcher_pid] = e
    for pid, e in newest.items():
        console.print(f"Config edits seen by anyclaude pid {pid} (newest last):")
        for event in e.record.config_events[-5:]:
            when = time.strftime("%H:%M:%S", time.localtime(float(event.get("at", 0))))
            mark = "[green]✓[/green]" if event.get("applied") else "[red]✗[/red]"
            console.print(f"  {when} {mark} {escape(str(event.get('message', '')))}")


@cli.command()
@click.argument("name", required=False)
def stop(name: str | None) -> None:
    """Stop a running backend (all of them without NAME), including one orphaned by a killed anyclaude."""
    from launcher.control import stop as do_stop
    from launcher.paths import Home

    done = do_stop(Home.from_env(), name)
    click.echo("\n".join(done) if done else "Nothing is running.")


@cli.command()
@click.argument("name", required=False)
def restart(name: str | None) -> None:
    """Restart a running backend now (also clears FATAL)."""
    from launcher.control import restart as do_restart
    from launcher.paths import Home

    done = do_restart(Home.from_env(), name)
    click.echo("\n".join(done) if done else "Nothing is running.")


# ------------------------------------------------------------------------------------ logs


@cli.command()
@click.argument("name", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(0, sys.maxsize),
    default=50,
    show_default=True,
    help="How many lines to show first.",
)
def logs(name: str | None, follow: bool, lines: int) -> None:
    """Show a backend's log (`anyclaude` for the launcher's own)."""
    from launcher.logview import pick_log, show_log
    from launcher.paths import Home

    show_log(pick_log(Home.from_env(), name), lines, follow)


# ------------------------------------------------------------------------------------ doctor


@cli.command()
@config_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--deep",
    is_flag=True,
    help="Also send real requests through the proxy (stream, tool call, prompt cache); "
    "starts a proxy for the check when none runs for the mode.",
)
def doctor(config_path: str | None, mode: str | None, as_json: bool, deep: bool) -> None:
    """Check this machine, the config and running backends; say how to fix what is wrong."""
    import os

    from launcher.doctor import render, run_checks
    from launcher.paths import Home

    checks = run_checks(config_path, mode, os.environ, Home.from_env(os.environ), deep=deep)
    sys.exit(render(checks, as_json))


# `models`, `config` and `rollback` live in cli_files.py; `requests`, `usage` and `dashboard` (the request log)
# with the rest of observability. Neither imports this module: they are added here.
from launcher import cli_files  # noqa: E402
from launcher.observe import commands as observe_commands  # noqa: E402

for _command in (cli_files.models, cli_files.config, cli_files.rollback):
    cli.add_command(_command)
for _command in (observe_commands.requests, observe_commands.usage, observe_commands.dashboard):
    cli.add_command(_command)

# ------------------------------------------------------------------------------------ entry point


_GROUP_FLAGS = {"-h", "--help", "-V", "--version"}
_VALUE_OPTIONS = {"--mode", "-m", "--config", "-c"}
# Claude Code's own options (2.1.197) this close to one of ours: they go to Claude Code as they are.
_CLAUDE_LOOKALIKES = {"--model", "--mcp-config", "--mcp-debug"}


def route(argv: list[str]) -> list[str]:
    """`anyclaude [--mode X] [-- claude args]` is the `run` command; subcommands and --help stay as they are."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg in _GROUP_FLAGS:
            return argv
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            _refuse_mistyped_option(arg)
            i += 1
            continue
        if arg == "run":
            for later in argv[i + 1 :]:
                if later == "--":
                    break
                if later.startswith("-"):
                    _refuse_mistyped_option(later)
            return argv
        if arg in cli.commands:
            return argv
        _refuse_mistyped_command(arg)
        return ["run", *argv]
    return ["run", *argv]


# A word this close to a subcommand's name is a typo, not a prompt ("stauts" 0.83, "doctr" 0.91; "hello" and
# "help" match nothing at this cutoff).
_TYPO_CUTOFF = 0.75


def _refuse_mistyped_option(arg: str) -> None:
    """Stop a mistyped option of anyclaude's own (`--mod mlx`) before it goes to Claude Code as an unknown one.

    Claude Code's options that happen to look like ours (`--model`) and anything after `--` go on unchanged.

    Raises:
        click.UsageError: `arg` is close to, but not, one of anyclaude's options (exit 2).
    """
    import difflib

    name = arg.split("=", 1)[0]
    if not name.startswith("--") or name in _CLAUDE_LOOKALIKES or name in _VALUE_OPTIONS | _GROUP_FLAGS:
        return
    ours = sorted(o for o in _VALUE_OPTIONS | _GROUP_FLAGS if o.startswith("--"))
    close = difflib.get_close_matches(name, ours, n=1, cutoff=_TYPO_CUTOFF)
    if close:
        raise click.UsageError(
            f"no option `{name}`; did you mean `{close[0]}`? (To pass it to Claude Code: anyclaude -- {arg})"
        )


def _refuse_mistyped_command(word: str) -> None:
    """Stop a mistyped subcommand (`anyclaude stauts`) before it starts a backend and Claude Code.

    Only a single word can be a mistyped command; a prompt with spaces, or any word not close to a
    subcommand, goes on to Claude Code.

    Raises:
        click.UsageError: `word` is close to a subcommand (exit 2).
    """
    import difflib
    import re

    if not re.fullmatch(r"[A-Za-z][A-Za-z-]*", word):
        return
    close = difflib.get_close_matches(word.lower(), sorted(cli.commands), n=1, cutoff=_TYPO_CUTOFF)
    if close:
        raise click.UsageError(
            f"no command `{word}`; did you mean `{close[0]}`? "
            f"(To send it to Claude Code as a prompt: anyclaude -- {word})"
        )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI, print AnyclaudeError as one line plus a hint, exit with its code."""
    try:
        args = route(list(sys.argv[1:] if argv is None else argv))
        cli.main(args=args, prog_name="anyclaude", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AnyclaudeError as exc:
        click.secho(f"Error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(EXIT_RUNTIME)
