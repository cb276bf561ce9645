"""The Anthropic Messages request, validated at the edge.

Strict where the Messages API is strict: field types are not coerced (`"max_tokens": "100"` is a 400, as
the API answers), `messages` may not be empty, tool names may not be empty, `temperature` and `top_p` lie in
0–1 and `top_k` is not negative, and a `thinking` config must be well formed (`enabled` needs an integer
`budget_tokens` of at least 1024 and below `max_tokens`).

Lenient only where Claude Code needs it: unknown top-level fields are accepted and dropped, never a 400
(Claude Code adds them faster than any proxy learns them: `output_config`, `context_management`), and so
are `thinking` kinds newer than this code (`adaptive` arrived that way; 2.1.197 sends it). A `system`
role inside `messages` is accepted: Claude Code sends one mid-conversation.

Content blocks and tool schemas stay plain dicts: validating a 76 KB body's nested JSON Schema with
pydantic would cost milliseconds per request and buy nothing; `blocks.py` checks each block and raises a
400 that names it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from launcher.bridge.errors import ApiError, invalid_request


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


class Message(_Lenient):
    # `system` appears mid-conversation in Claude Code's traffic (an agent list after the first turn).
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class Tool(_Lenient):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    # Anthropic's server tools (`web_search_20250305`, ...) carry a type and no schema.
    type: str | None = None


class CountTokensRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: StrictInt = Field(ge=1)
    stream: StrictBool = False
    stop_sequences: list[StrictStr] | None = None
    # The API's ranges; Claude Code 2.1.197 sends none of the three.
    temperature: float | None = Field(None, strict=True, ge=0, le=1)
    top_p: float | None = Field(None, strict=True, ge=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    metadata: dict[str, Any] | None = None


# The API's floor for an extended-thinking budget.
MIN_THINKING_BUDGET = 1024


def check_thinking(thinking: dict[str, Any] | None, max_tokens: int | None) -> None:
    """Raise ApiError (400) for a `thinking` config the API would refuse; newer kinds pass (see the module)."""
    if thinking is None:
        return
    kind = thinking.get("type")
    if not isinstance(kind, str):
        raise invalid_request("thinking.type: a string is required (enabled, disabled or adaptive)")
    if kind != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise invalid_request("thinking.budget_tokens: an integer is required when thinking.type is 'enabled'")
    if budget < MIN_THINKING_BUDGET:
        raise invalid_request(f"thinking.budget_tokens: must be at least {MIN_THINKING_BUDGET}")
    if max_tokens is not None and budget >= max_tokens:
        raise invalid_request("thinking.budget_tokens: must be less than max_tokens")


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
        request = MessagesRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(_describe(exc)) from None
    check_thinking(request.thinking, request.max_tokens)
    return request


def parse_count_tokens_request(raw: Any) -> CountTokensRequest:
    """Validate a decoded `/v1/messages/count_tokens` body. Raises ApiError (400)."""
    if not isinstance(raw, dict):
        raise invalid_request("the request body must be a JSON object")
    try:
        request = CountTokensRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(_describe(exc)) from None
    check_thinking(request.thinking, None)
    return request


__all__ = [
    "ApiError",
    "CountTokensRequest",
    "Message",
    "MessagesRequest",
    "Tool",
    "parse_count_tokens_request",
    "parse_messages_request",
]
