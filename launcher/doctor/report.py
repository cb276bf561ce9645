"""Printing doctor's findings: grouped lines with ✓ ! ✗ (coloured on a terminal), or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from adapters.base import Check, CheckStatus
from launcher.redact import redact_argv, redact_text

SYMBOL = {CheckStatus.OK: "✓", CheckStatus.WARN: "!", CheckStatus.FAIL: "✗"}
COLOUR = {CheckStatus.OK: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "red"}
SECTION = {"env": "Environment", "config": "Config", "running": "Running", "home": "Home"}


def exit_code(checks: Sequence[Check]) -> int:
    """1 when any check failed; warnings alone are fine."""
    return 1 if any(c.status is CheckStatus.FAIL for c in checks) else 0


def section_of(name: str) -> str:
    head, _, rest = name.partition(".")
    if head == "backend":
        return f"Backend {rest.partition('.')[0]}"
    return SECTION.get(head, head.capitalize())


def mask(checks: Iterable[Check], secrets: Iterable[str]) -> list[Check]:
    """Copies whose text shows no known secret and no `--api-key X` / `TOKEN=X` value."""
    known = tuple(secrets)

    def clean(finding: str) -> str:
        # Findings may quote another process's command line; fixes are anyclaude's own words.
        return " ".join(redact_argv(redact_text(finding, known).split(" ")))

    return [Check(c.name, c.status, clean(c.finding), redact_text(c.fix, known) if c.fix else None) for c in checks]


def to_json(checks: Sequence[Check]) -> str:
    rows = [{"name": c.name, "status": str(c.status), "finding": c.finding, "fix": c.fix} for c in checks]
    return json.dumps({"checks": rows, "ok": exit_code(checks) == 0}, indent=2, ensure_ascii=False)


def render(checks: Sequence[Check], as_json: bool, out: TextIO | None = None) -> int:
    """Print the checks (JSON, a rich table on a terminal, plain lines otherwise); return the exit code."""
    stream = out or sys.stdout
    if as_json:
        stream.write(to_json(checks) + "\n")
    elif stream.isatty():
        _render_rich(checks, stream)
    else:
        stream.write(plain(checks))
    stream.flush()
    return exit_code(checks)


def summary(checks: Sequence[Check]) -> str:
    counts = {status: sum(1 for c in checks if c.status is status) for status in CheckStatus}
    ok, warnings, failures = (counts[status] for status in (CheckStatus.OK, CheckStatus.WARN, CheckStatus.FAIL))
    return f"{ok} ok, {warnings} warning{'' if warnings == 1 else 's'}, {failures} failed"


def plain(checks: Sequence[Check]) -> str:
    return "\n".join(text for text, _ in _lines(checks)) + "\n"


def _lines(checks: Sequence[Check]) -> list[tuple[str, str]]:
    """(text, style) per output line: section headers, one line per check, an indented fix under a problem."""
    lines: list[tuple[str, str]] = []
    width = max((len(c.name) for c in checks), default=0)
    section = None
    for check in checks:
        if section_of(check.name) != section:
            section = section_of(check.name)
            lines += [("", ""), (section, "bold")] if lines else [(section, "bold")]
        lines.append((f"  {SYMBOL[check.status]} {check.name:<{width}}  {check.finding}", COLOUR[check.status]))
        if check.fix and check.status is not CheckStatus.OK:
            lines.append((f"    {' ' * width}  fix: {check.fix}", "dim"))
    return [*lines, ("", ""), (summary(checks), "bold")]


def _render_rich(checks: Sequence[Check], stream: TextIO) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(file=stream, highlight=False, soft_wrap=True)
    for text, style in _lines(checks):
        line = Text(text)
        if style in COLOUR.values():
            line.stylize(style, 2, 3)  # the symbol only; the finding stays readable
        elif style:
            line.stylize(style)
        console.print(line)
