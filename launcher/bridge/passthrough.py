"""Relaying to a backend that speaks Anthropic itself.

`passthrough` (the real API): headers and body go through untouched, bytes are relayed as they come.
A local Anthropic-speaking server (llama-server) gets only the cache hygiene and the model mapping.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from launcher.bridge import sse
from launcher.bridge.asgi import ClosingStreamingResponse
from launcher.bridge.codec import dumps
from launcher.bridge.errors import ApiError
from launcher.bridge.failures import connect_failure
from launcher.bridge.hygiene import clean_anthropic_body
from launcher.bridge.options import ProxyOptions
from launcher.bridge.upstream import Reporter, Upstream

log = logging.getLogger("anyclaude.bridge")

# RFC 9110 7.6.1 hop-by-hop headers, plus those httpx recomputes for the new connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_AUTH = frozenset({"x-api-key", "authorization"})


def forward_headers(request: Request, upstream: Upstream, options: ProxyOptions) -> list[tuple[bytes, bytes]]:
    """The client's headers for the backend: hop-by-hop removed, the backend's key where needed."""
    own_key = options.api_key is not None  # then the client's key is the proxy's and must not travel on
    out = []
    has_auth = False
    for name, value in request.headers.raw:
        lowered = name.decode("latin-1").lower()
        if lowered in HOP_BY_HOP:
            continue
        if lowered in _AUTH:
            if own_key:
                continue
            has_auth = True
        out.append((name, value))
    if upstream.api_key and not has_auth:
        out.append((b"x-api-key", upstream.api_key.encode()))
    return out


def relay_body(raw: bytes, parsed: Any, upstream: Upstream, options: ProxyOptions) -> bytes:
    if upstream.passthrough or not isinstance(parsed, dict):
        return raw
    model = options.backend_model(str(parsed.get("model", "")), upstream.model)
    return dumps(clean_anthropic_body(parsed, model, options.strip_billing_header))


async def relay(
    request: Request,
    client: httpx.AsyncClient,
    upstream: Upstream,
    body: bytes,
    options: ProxyOptions,
    gate: Reporter,
    on_close: Callable[[], Awaitable[None]],
) -> Response:
    """Send the request on and relay the answer. Raises ApiError when the backend is unreachable."""
    url = upstream.base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    outgoing = client.build_request(
        request.method, url, headers=forward_headers(request, upstream, options), content=body or None
    )
    try:
        response = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise connect_failure(upstream.name, type(exc).__name__) from None
    headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
    plain_sse = "text/event-stream" in response.headers.get("content-type", "") and not response.headers.get(
        "content-encoding"
    )

    async def body_iter() -> AsyncIterator[bytes]:
        ok = response.status_code < 500
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            ok = False
            log.warning("relay from %s broke mid-response (%s)", upstream.name, type(exc).__name__)
            if plain_sse:  # only an unencoded event stream can take one more event
                yield b"\n\n" + sse.encode(ApiError(500, "the backend connection failed mid-response").body())
        finally:
            await response.aclose()
            gate.report(ok)

    async def close() -> None:
        await response.aclose()
        await on_close()

    return ClosingStreamingResponse(body_iter(), status_code=response.status_code, headers=headers, on_close=close)
