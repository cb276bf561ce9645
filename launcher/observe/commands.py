"""`anyclaude requests`, `anyclaude usage` and `anyclaude dashboard`.

They read the request log's file directly (WAL: while the proxy writes it), so they work whether or
not anyclaude runs. Rich tables on a terminal, plain aligned text when piped, JSON on request.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from launcher.errors import AnyclaudeError, NotRunningError

FOLLOW_POLL = 0.5

# (title, key, width) of the `requests` table.
_REQUEST_COLUMNS = (
    ("time", "time", 8),
    ("session", "session", 8),
    ("backend", "backend", 10),
    ("model", "model_asked", 18),
    ("st", "stream", 2),
    ("in", "input_tokens", 7),
    ("cached", "cached_tokens", 7),
    ("out", "output_tokens", 6),
    ("ttft", "ttft", 7),
    ("total", "duration", 7),
    ("tok/s", "decode_tps", 6),
    ("stop", "stop_reason", 10),
    ("status", "result", 16),
    ("size", "size", 7),
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def _size(value: int | None) -> str:
    if not value:
        return "-"
    return f"{value} B" if value < 1024 else f"{value / 1024:.0f} KB" if value < 2**20 else f"{value / 2**20:.1f} MB"


def request_cells(row: dict[str, Any]) -> dict[str, str]:
    """One logged request as the table's text cells."""
    result = str(row["status"]) + (f" {row['error_type']}" if row["error_type"] else "")
    if row.get("tool_parse_failed"):
        result += " tool_parse_failed"
    return {
        "time": time.strftime("%H:%M:%S", time.localtime(row["started"])),
        "session": (row["session_id"] or "-")[:8],
        "backend": row["backend"] or "-",
        "model_asked": row["model_asked"] or ("count_tokens" if row["endpoint"] == "count_tokens" else "-"),
        "stream": "y" if row["streamed"] else "n",
        "input_tokens": _num(row["input_tokens"]),
        "cached_tokens": _num(row["cached_tokens"]),
        "output_tokens": _num(row["output_tokens"]),
        "ttft": _seconds(row["ttft"]),
        "duration": _seconds(row["duration"]),
        "decode_tps": "-" if row["decode_tps"] is None else f"{row['decode_tps']:.1f}",
        "stop_reason": row["stop_reason"] or "-",
        "result": result,
        "size": _size(row["request_bytes"]),
    }


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _plain_line(cells: dict[str, str], header: bool = False) -> str:
    parts = []
    for title, key, width in _REQUEST_COLUMNS:
        text = title if header else cells[key]
        parts.append(text.rjust(width) if key.endswith(("tokens", "tps")) else text.ljust(width))
    return "  ".join(parts).rstrip()


def _print_requests(found: Sequence[dict[str, Any]], as_json: bool, rich_out: bool, header: bool) -> None:
    if as_json:
        for row in found:
            click.echo(json.dumps(row))
        return
    if not rich_out:
        if header:
            click.echo(_plain_line({}, header=True))
        for row in found:
            click.echo(_plain_line(request_cells(row)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*(title for title, _, _ in _REQUEST_COLUMNS), show_header=header)
    for row in found:
        cells = request_cells(row)
        style = "red" if row["status"] >= 400 or row["error_type"] else "yellow" if row.get("tool_parse_failed") else ""
        table.add_row(*(cells[key] for _, key, _ in _REQUEST_COLUMNS), style=style)
    Console().print(table)


@click.command()
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(0, 2**63 - 1),  # what SQLite can bind; past it the query would fail
    default=20,
    show_default=True,
    help="How many of the last requests to show.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep showing new requests as they come.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per request, one per line.")
@click.option(
    "--tool-parse-failed",
    "parse_failed",
    is_flag=True,
    help="Only requests whose answer held text that looked like a tool call but could not be made one.",
)
def requests(count: int, follow: bool, as_json: bool, parse_failed: bool) -> None:
    """Show the last requests through the proxy: tokens, time to first token, speed, result."""
    from launcher.observe import store
    from launcher.paths import Home

    path = store.log_path(Home.from_env())
    rich_out = sys.stdout.isatty()
    with store.reader(path) as conn:
        found = [] if conn is None else store.rows(conn, count, parse_failed=parse_failed)
        last = 0 if conn is None else store.latest_id(conn)
    if not found and not follow:
        what = "No request with tool_parse_failed" if parse_failed else "No requests logged yet"
        click.echo(f"{what} in {path}.", err=not as_json)
        return
    _print_requests(found, as_json, rich_out, header=True)
    while follow:
        time.sleep(FOLLOW_POLL)
        with store.reader(path) as conn:
            fresh = [] if conn is None else store.rows(conn, 1000, last)
            newest = fresh[-1]["id"] if fresh else last
            if parse_failed:
                fresh = [row for row in fresh if row["tool_parse_failed"]]
        if fresh:
            _print_requests(fresh, as_json, rich_out, header=False)
        last = newest


@click.command()
@click.option("--since", metavar="WHEN", help="Only requests since: 30m, 12h, 7d, 2w, today, or a date (2026-12-01).")
@click.option(
    "--by", "group", type=click.Choice(["day", "session", "backend", "model"]), help="One row per day, session, …"
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def usage(since: str | None, group: str | None, as_json: bool) -> None:
    """Requests, tokens, cache hit ratio, time to first token (p50/p95), decode speed and errors."""
    from launcher.observe import store
    from launcher.observe import usage as figures
    from launcher.paths import Home

    try:
        start = figures.parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    path = store.log_path(Home.from_env())
    with store.reader(path) as conn:
        summaries = figures.summarize(conn, start, group)
    if as_json:
        click.echo(json.dumps({"log": str(path), "usage": [s.as_dict() for s in summaries]}, indent=2))
        return
    titles = [
        group or "",
        "requests",
        "errors",
        "input",
        "cached",
        "output",
        "cache hit",
        "ttft p50",
        "ttft p95",
        "tok/s",
    ]
    rows = [
        [
            s.key,
            str(s.requests),
            str(s.errors),
            str(s.input_tokens),
            str(s.cached_tokens),
            str(s.output_tokens),
            "-" if s.cache_hit_ratio is None else f"{s.cache_hit_ratio:.0%}",
            _seconds(s.ttft_p50),
            _seconds(s.ttft_p95),
            "-" if s.decode_tps_p50 is None else f"{s.decode_tps_p50:.1f}",
        ]
        for s in summaries
    ]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*titles)
        for row in rows:
            table.add_row(*row, style="bold" if row[0] == "total" else "")
        Console().print(table)
        return
    widths = [max(len(str(r[i])) for r in [titles, *rows]) for i in range(len(titles))]
    for row in [titles, *rows]:
        click.echo(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


@click.command()
@click.option("--mode", "-m", metavar="NAME", help="The backend whose anyclaude to open (when several run).")
@click.option("--no-open", is_flag=True, help="Print the address only; do not open a browser.")
def dashboard(mode: str | None, no_open: bool) -> None:
    """Open the running anyclaude's dashboard (/ui) in the browser."""
    from launcher.control import survey
    from launcher.paths import Home

    running = [e for e in survey(Home.from_env()) if e.launcher and e.record.proxy_url]
    if mode is not None:
        running = [e for e in running if e.record.name == mode]
    if not running:
        raise NotRunningError(
            "No anyclaude is serving" + (f" {mode}." if mode else "."),
            hint="Start one with: anyclaude serve (it prints the dashboard's address).",
        )
    url = f"{running[0].record.proxy_url}/ui"
    click.echo(url)
    if not no_open:
        import webbrowser

        if not webbrowser.open(url):
            raise AnyclaudeError("No browser could be opened here.", hint=f"Open {url} yourself.")
