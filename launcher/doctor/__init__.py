"""`anyclaude doctor`: what could stop anyclaude from working here, and how to fix it.

Every check looks and changes nothing: the machine (Python, platform, MLX packages, OpenBLAS,
server binaries, Claude Code), the config and each backend it would start, what runs now, and
`$ANYCLAUDE_HOME`. It never imports mlx, and the slow probes (`--version` of binaries) run beside
the rest, so the whole report takes well under five seconds.

`--deep` adds requests through the proxy to the chosen backend (`deep.py`): those do change
something for a while, since a proxy is started for them when none runs, and they take longer.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adapters.base import Check
from adapters.checks import hf_cache_dir
from launcher.control import survey
from launcher.doctor.configuration import config_checks
from launcher.doctor.deep import deep_checks
from launcher.doctor.environment import environment_checks
from launcher.doctor.home import home_checks
from launcher.doctor.report import exit_code, mask, render
from launcher.doctor.running import running_checks
from launcher.paths import Home

__all__ = ["exit_code", "main", "render", "run_checks"]


def run_checks(
    config_path: str | None,
    mode: str | None,
    env: Mapping[str, str],
    home: Home,
    cwd: Path | None = None,
    deep: bool = False,
) -> list[Check]:
    """All doctor checks, in report order, with every secret of the config masked.

    `deep` adds the `deep.*` checks: real requests through the proxy (one is started for them when
    none runs for the mode, and stopped again).
    """
    where = cwd or Path.cwd()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="doctor") as pool:
        machine = pool.submit(environment_checks, env)
        running = survey(home)
        configured, secrets = config_checks(config_path, mode, env, where, running)
        rest = running_checks(running) + home_checks(home, hf_cache_dir())
        found = machine.result() + configured + rest
    if deep:
        found += deep_checks(config_path, mode, env, home, where)
    return mask(found, secrets)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m launcher.doctor [--mode X] [--config P] [--json] [--deep]`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="anyclaude doctor", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mode", "-m", metavar="NAME")
    parser.add_argument("--config", "-c", metavar="PATH", dest="config_path")
    parser.add_argument("--json", action="store_true", dest="as_json")
    parser.add_argument("--deep", action="store_true", help="Also send real requests through the proxy.")
    args = parser.parse_args(argv)
    checks = run_checks(args.config_path, args.mode, os.environ, Home.from_env(os.environ), deep=args.deep)
    return render(checks, args.as_json)
