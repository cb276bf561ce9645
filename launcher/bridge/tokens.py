"""Prompt sizes: exact counts from the backend's count endpoint or the model folder's own tokenizer,
estimates otherwise, and the context contract: a prompt counted past the window gets "prompt is too
long", never a truncation. An estimate never refuses: the request goes on and the backend's own limit
answers (failures.py maps it to the same error).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import httpx

from launcher.bridge import local_tokens
from launcher.bridge.codec import DecodeError, dumps, loads
from launcher.bridge.errors import prompt_too_long
from launcher.bridge.upstream import Upstream

log = logging.getLogger("anyclaude.bridge")

# Typical BPE tokenizers average 3.5-4 characters per token on English and code.
CHARS_PER_TOKEN = 3.5
# No common tokenizer averages fewer than 2 bytes per token on JSON-escaped text: a body whose
# length / 2 fits surely fits, and is not worth a tokenizer round trip.
SAFE_BYTES_PER_TOKEN = 2.0
TOKENIZE_TIMEOUT = 30.0


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool


def estimate(size: int) -> int:
    return math.ceil(size / CHARS_PER_TOKEN)


async def count(
    client: httpx.AsyncClient, upstream: Upstream, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> TokenCount:
    """The prompt's tokens from `upstream.tokenize_url`, else from the model folder's tokenizer, else an
    estimate (logged as one)."""
    if upstream.tokenize_url:
        exact = await _tokenize(client, upstream, messages, tools)
        if exact is not None:
            return TokenCount(exact, True)
    if upstream.tokenizer_folder:
        counted = await asyncio.to_thread(local_tokens.count, upstream.tokenizer_folder, messages, tools)
        if counted is not None:
            return TokenCount(counted, True)
    size = len(dumps({"messages": messages, "tools": tools}))
    tokens = estimate(size)
    log.info("prompt size %d tokens is an estimate (%d bytes / %.1f)", tokens, size, CHARS_PER_TOKEN)
    return TokenCount(tokens, False)


async def _tokenize(
    client: httpx.AsyncClient, upstream: Upstream, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> int | None:
    url = upstream.tokenize_url or ""
    if url.rstrip("/").endswith("/v1/tokenize"):
        body: dict[str, Any] = {"messages": messages, "tools": tools} if tools else {"messages": messages}
        if upstream.model is not None:
            body["model"] = upstream.model
    else:  # llama-server's /tokenize takes plain text: the contents, without the template's markup
        body = {"content": local_tokens.flatten(messages, tools)}
    # Without the content type a FastAPI server reads the body as bytes, not JSON, and answers 400.
    headers = {"content-type": "application/json"}
    if upstream.api_key:
        headers["authorization"] = f"Bearer {upstream.api_key}"
    try:
        response = await client.post(url, content=dumps(body), headers=headers, timeout=TOKENIZE_TIMEOUT)
        value = loads(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, DecodeError) as exc:
        log.warning("tokenize at %s failed (%s); estimating instead", url, type(exc).__name__)
        return None
    if isinstance(value, dict):
        if isinstance(value.get("count"), int):
            return int(value["count"])
        if isinstance(value.get("tokens"), list):
            return len(value["tokens"])
    log.warning(
        "tokenize at %s answered %s without a count (%s); estimating instead",
        url,
        response.status_code,
        response.text[:200],
    )
    return None


async def fit(
    client: httpx.AsyncClient,
    upstream: Upstream,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    body_size: int,
    requested: int,
) -> tuple[int, int]:
    """(prompt tokens, max_tokens to ask for) for one request.

    `max_tokens` is clamped to what the model can give: Claude Code asks for 32000-64000, more than
    most local models' whole context. Raises ApiError 400 "prompt is too long" when the prompt, counted,
    fills the context. An estimate past the context is no reason to refuse (JSON tool schemas make a
    body's bytes overstate its tokens several times): the request goes on with `max_tokens` at a quarter
    of the context, and the backend's own limit answers if the prompt is in truth too long.
    """
    max_tokens = requested
    if upstream.max_output_tokens:
        max_tokens = min(max_tokens, upstream.max_output_tokens)
    context = upstream.context_length
    if not context:
        return estimate(body_size), max_tokens
    if body_size / SAFE_BYTES_PER_TOKEN < context:
        prompt = TokenCount(estimate(body_size), False)
    else:
        prompt = await count(client, upstream, messages, tools)
    if prompt.tokens >= context:
        if prompt.exact:
            raise prompt_too_long(prompt.tokens, context)
        log.info("an estimate of %d tokens exceeds the context of %d; the backend decides", prompt.tokens, context)
        return prompt.tokens, max(1, min(max_tokens, context // 4))
    return prompt.tokens, max(1, min(max_tokens, context - prompt.tokens))
