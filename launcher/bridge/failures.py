"""Backend failures → the Anthropic error a client should see, and whether the breaker should count it.

Translated once, here: connect errors and 5xx are the backend's fault (counted, 529/500 so the SDK
retries); a 4xx is the request's (not counted, same status); a backend's "context exceeded" becomes
the "prompt is too long" wording Claude Code compacts on.
"""

from __future__ import annotations

import re
from typing import Any

from launcher.bridge.codec import DecodeError, loads
from launcher.bridge.errors import ApiError, overloaded, prompt_too_long

# A restarting local backend is usually back within a couple of seconds.
RETRY_AFTER = 2.0
_CONTEXT = re.compile(r"context[_ ](length|size|window)|exceed_context|maximum context|n_ctx|prompt is too long", re.I)
_MAXIMUM = re.compile(r"maximum context length is (\d+)|context (?:size|length|window)[^\d]{0,30}(\d+)", re.I)
_REQUESTED = re.compile(r"(?:requested|prompt|input)[^\d]{0,20}(\d+) tokens", re.I)


def connect_failure(upstream_name: str, kind: str) -> ApiError:
    """The error for a backend that could not be reached; `kind` names the failure (e.g. ConnectError)."""
    return overloaded(f"backend {upstream_name} is not reachable ({kind}); retry shortly", RETRY_AFTER)


def _message(body: bytes) -> tuple[str, dict[str, Any]]:
    try:
        value = loads(body)
    except DecodeError:
        return body[:500].decode(errors="replace").strip(), {}
    if isinstance(value, dict):
        error = value.get("error", value)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or value.get("detail") or ""
            return str(message)[:2000], error
        return str(error)[:2000], value
    return str(value)[:500], {}


def backend_status_error(status: int, body: bytes, context_length: int | None, prompt_estimate: int) -> ApiError:
    """The error for a backend answering `status` (not 2xx) with `body`."""
    message, fields = _message(body)
    code = str(fields.get("code", "")) + " " + str(fields.get("type", ""))
    if 400 <= status < 500 and (_CONTEXT.search(message) or _CONTEXT.search(code)):
        return _too_long(message, fields, context_length, prompt_estimate)
    text = message or f"HTTP {status}"
    if status >= 500:
        if status == 500:
            return ApiError(500, f"the backend failed: {text}")
        return overloaded(f"the backend is unavailable (HTTP {status}): {text}", RETRY_AFTER)
    if status == 429:
        return ApiError(429, f"the backend is rate limiting: {text}", retry_after=RETRY_AFTER)
    # 422 is how FastAPI-based backends say 400.
    return ApiError(400 if status == 422 else status, f"the backend refused the request: {text}")


def _too_long(message: str, fields: dict[str, Any], context_length: int | None, prompt_estimate: int) -> ApiError:
    tokens = fields.get("n_prompt_tokens")
    maximum = fields.get("n_ctx")
    if not isinstance(maximum, int):
        found = _MAXIMUM.search(message)
        maximum = int(next(g for g in found.groups() if g)) if found else context_length
    if not isinstance(tokens, int):
        found = _REQUESTED.search(message)
        tokens = int(found.group(1)) if found else prompt_estimate
    if maximum is None:
        maximum = max(1, tokens - 1)
    return prompt_too_long(max(tokens, maximum + 1), maximum)
