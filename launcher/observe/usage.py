"""Totals over the request log: requests, tokens, cache hit ratio, TTFT p50/p95, decode speed, errors.

`anyclaude usage` and the dashboard both call `summarize`; `parse_since` reads `--since`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

GROUPS = ("day", "session", "backend", "model")
_COLUMNS = "started, session_id, backend, model_asked, endpoint, input_tokens, cached_tokens, output_tokens, "
_COLUMNS += "ttft, decode_tps, status, error_type"
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Summary:
    """One group's figures (None where the log holds nothing to compute them from)."""

    key: str
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cache_hit_ratio: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    decode_tps_p50: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """`--since`: a span back from now (`30m`, `12h`, `7d`, `2w`), `today`, or a date/time (ISO 8601).

    Raises:
        ValueError: none of those.
    """
    if text is None or not text.strip():
        return None
    now = time.time() if now is None else now
    if text.strip() == "today":
        start = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp()
    found = _SPAN.match(text)
    if found:
        return now - float(found.group(1)) * _UNIT[found.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: give a span (30m, 12h, 7d, 2w), 'today', or a date (2026-12-01)") from None


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` in 0..1) of `values`; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-share * len(ordered) // 1)))  # ceil without math
    return ordered[min(rank, len(ordered)) - 1]


def _key(row: sqlite3.Row | tuple[Any, ...], by: str) -> str:
    started, session, backend, model = row[0], row[1], row[2], row[3]
    if by == "day":
        return time.strftime("%Y-%m-%d", time.localtime(started))
    if by == "session":
        return str(session or "-")
    if by == "model":
        return str(model or "-")
    return str(backend or "-")


def summarize(conn: sqlite3.Connection | None, since: float | None, by: str | None) -> list[Summary]:
    """Figures per group (`by` one of GROUPS), oldest group first, then a `total` row.

    Only `/v1/messages` requests count; `count_tokens` calls use no generation.
    """
    if by is not None and by not in GROUPS:
        raise ValueError(f"--by {by!r}: one of {', '.join(GROUPS)}")
    if conn is None:
        return [Summary("total")]
    query = f"SELECT {_COLUMNS} FROM requests WHERE endpoint = 'messages'"
    params: tuple[Any, ...] = ()
    if since is not None:
        query += " AND started >= ?"
        params = (since,)
    found = conn.execute(query + " ORDER BY id", params).fetchall()
    groups: dict[str, list[tuple[Any, ...]]] = {}
    if by is not None:
        for row in found:
            groups.setdefault(_key(row, by), []).append(row)
    return [_summary(key, rows) for key, rows in groups.items()] + [_summary("total", found)]


def _summary(key: str, rows: Iterable[tuple[Any, ...]]) -> Summary:
    out = Summary(key)
    ttfts: list[float] = []
    rates: list[float] = []
    for row in rows:
        out.requests += 1
        out.input_tokens += row[5] or 0
        out.cached_tokens += row[6] or 0
        out.output_tokens += row[7] or 0
        if row[8] is not None:
            ttfts.append(row[8])
        if row[9] is not None:
            rates.append(row[9])
        if (row[10] or 0) >= 400 or row[11] is not None:
            out.errors += 1
    prompt = out.input_tokens + out.cached_tokens
    out.cache_hit_ratio = round(out.cached_tokens / prompt, 4) if prompt else None
    out.ttft_p50, out.ttft_p95 = percentile(ttfts, 0.5), percentile(ttfts, 0.95)
    out.decode_tps_p50 = percentile(rates, 0.5)
    return out
