"""Errors in the shape Anthropic clients understand: `{"type": "error", "error": {"type", "message"}}`.

Every failure the proxy reports goes through `ApiError`, so a client never sees a bare 500 page or an
HTML body it cannot parse (the SDK would then retry blindly or crash).
"""

from __future__ import annotations

import math
from typing import Any

from launcher.bridge.codec import dumps

# Anthropic's error type for each HTTP status it uses.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


class ApiError(Exception):
    """A failure to answer with `status` and an Anthropic error body.

    Args:
        status: the HTTP status.
        message: what went wrong, for a person; never contains a key or a request body.
        error_type: Anthropic's error type; derived from `status` when omitted.
        retry_after: seconds, sent as `Retry-After` (529 and 429).
    """

    def __init__(self, status: int, message: str, error_type: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return error_body(self.error_type, self.message)

    def body_bytes(self) -> bytes:
        return dumps(self.body())

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, math.ceil(self.retry_after)))}


def invalid_request(message: str) -> ApiError:
    return ApiError(400, message)


def prompt_too_long(tokens: int, maximum: int) -> ApiError:
    # Claude Code recognises this exact wording and compacts the conversation instead of failing.
    return ApiError(400, f"prompt is too long: {tokens} tokens > {maximum} maximum")


def overloaded(message: str, retry_after: float) -> ApiError:
    return ApiError(529, message, retry_after=retry_after)
