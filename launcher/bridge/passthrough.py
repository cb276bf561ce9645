"""Relaying to a backend that speaks Anthropic itself.

`passthrough` (the real API): headers and body go through untouched, bytes are relayed as they come,
errors included. A local Anthropic-speaking server (llama-server) gets the cache hygiene and the model
mapping, documents as text (it drops document blocks), and its errors are given Anthropic's shape (it
writes OpenAI's).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from launcher.bridge import sse
from launcher.bridge.asgi import ClosingStreamingResponse
from launcher.bridge.codec import dumps
from launcher.bridge.documents import inline_documents
from launcher.bridge.errors import ApiError, invalid_request
from launcher.bridge.failures import backend_status_error, connect_failure
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


def upstream_url(base_url: str, path: str, query: str = "") -> str:
    """The backend's URL for the client's `path`: the base URL is the API root (`http://127.0.0.1:8080`,
    `https://api.anthropic.com`), and a base that already ends in `/v1` (how OpenAI-style base URLs are
    written) does not double it: `/v1/v1/messages` was a 404 for every llama-server request."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        base = base[: -len("/v1")]
    return f"{base}{path}?{query}" if query else f"{base}{path}"


# llama-server's answer to an image for a model without a vision projector (a 500, though the request is at fault).
_NO_VISION = re.compile(r"image input is not supported", re.I)
# An error body larger than this is not an error message worth reading.
_ERROR_BODY_LIMIT = 64 * 1024


async def _local_error(response: httpx.Response, upstream: Upstream) -> ApiError:
    """A local Anthropic-speaking server's error as an Anthropic error: llama-server writes OpenAI's shape,
    and its "exceeds the available context size" must read "prompt is too long" for Claude Code to compact."""
    try:
        body = b""
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()
    if _NO_VISION.search(body[:_ERROR_BODY_LIMIT].decode(errors="replace")):
        return invalid_request(f"this model does not accept images (backend {upstream.name} has no vision support)")
    return backend_status_error(response.status_code, body[:_ERROR_BODY_LIMIT], upstream.context_length, 0)


def relay_body(raw: bytes, parsed: Any, upstream: Upstream, options: ProxyOptions) -> bytes:
    """The body for the backend: the client's bytes for the real API; for a local server, the cache hygiene,
    the model mapping and documents as text. Raises ApiError (400) for a document without readable text."""
    if upstream.passthrough or not isinstance(parsed, dict):
        return raw
    model = options.backend_model(str(parsed.get("model", "")), upstream.model)
    body = clean_anthropic_body(parsed, model, options.strip_billing_header)
    if "messages" in body:
        body["messages"] = inline_documents(body["messages"])
    return dumps(body)


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
    url = upstream_url(upstream.base_url, request.url.path, request.url.query)
    outgoing = client.build_request(
        request.method, url, headers=forward_headers(request, upstream, options), content=body or None
    )
    try:
        response = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise connect_failure(upstream.name, type(exc).__name__) from None
    if response.status_code >= 400 and not upstream.passthrough:
        raise await _local_error(response, upstream)
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
