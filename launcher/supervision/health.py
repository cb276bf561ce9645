"""HTTP health probes: one request, a verdict and a short detail for logs and `status`."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from adapters.base import Probe


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


async def probe(client: httpx.AsyncClient, check: Probe) -> ProbeResult:
    """Send `check` once. 2xx is healthy; anything else, a timeout or a refused connection is not."""
    try:
        response = await client.request(check.method, check.url, json=check.json, headers=dict(check.headers))
    except httpx.TimeoutException:
        return ProbeResult(False, "timed out")
    except httpx.HTTPError as exc:
        return ProbeResult(False, type(exc).__name__)
    return ProbeResult(response.is_success, f"HTTP {response.status_code}")
