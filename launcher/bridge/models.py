"""The Anthropic Messages request, validated at the edge.

Lenient by design: Claude Code adds fields faster than any proxy learns them (`output_config`,
`context_management`, new `thinking` kinds), so unknown fields are accepted and dropped, never a
400. Content blocks and tool schemas stay plain dicts: validating a 76 KB body's nested JSON Schema
with pydantic would cost milliseconds per request and buy nothing; `request.py` checks each block
it uses and raises a 400 that names it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from launcher.bridge.errors import ApiError, invalid_request


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


class Message(_Lenient):
    # `system` appears mid-conversation in Claude Code's traffic (an agent list after the first turn).
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class Tool(_Lenient):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    # Anthropic's server tools (`web_search_20250305`, ...) carry a type and no schema.
    type: str | None = None


class CountTokensRequest(_Lenient):
    model: str
    messages: list[Message]
    system: str | list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_messages_request(raw: Any) -> MessagesRequest:
    """Validate a decoded `/v1/messages` body. Raises ApiError (400) naming the first bad fields."""
    if not isinstance(raw, dict):
        raise invalid_request("the request body must be a JSON object")
    try:
        return MessagesRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(_describe(exc)) from None


def parse_count_tokens_request(raw: Any) -> CountTokensRequest:
    """Validate a decoded `/v1/messages/count_tokens` body. Raises ApiError (400)."""
    if not isinstance(raw, dict):
        raise invalid_request("the request body must be a JSON object")
    try:
        return CountTokensRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(_describe(exc)) from None


__all__ = [
    "ApiError",
    "CountTokensRequest",
    "Message",
    "MessagesRequest",
    "Tool",
    "parse_count_tokens_request",
    "parse_messages_request",
]
