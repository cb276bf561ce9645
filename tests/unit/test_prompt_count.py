"""Prompt sizes are counted with the model folder's tokenizer, and an estimate never refuses a request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from adapters.base import ApiKind
from launcher.bridge import tokens
from launcher.bridge.errors import ApiError
from launcher.bridge.upstream import Upstream

CONTEXT = 8192


def claude_code_sized() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(messages, tools, body bytes) shaped like Claude Code's first request: a long system prompt, one short
    question, and 18 tools whose JSON schemas make most of the ~70 KB body."""
    prose = (
        "Use this tool to read a file from the local filesystem. The file_path parameter must be an absolute "
        'path, not a relative path. Lines longer than 2000 characters are truncated; "offset" and "limit" read '
        "part of a long file.\n- Results are returned using cat -n format, with line numbers starting at 1.\n"
    )
    system = "You are Claude Code, Anthropic's official CLI for Claude.\n" + prose * 20
    properties = {
        f"param_{i}": {"type": "string", "description": prose[:160], "enum": ["a", "b", "c"]} for i in range(10)
    }
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"Tool{n}",
                "description": prose * 5,
                "parameters": {"type": "object", "properties": properties, "required": ["param_0"]},
            },
        }
        for n in range(18)
    ]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "say hello in French"}]
    body = json.dumps({"model": "claude-sonnet-4-5", "system": system, "messages": messages[1:], "tools": tools})
    return messages, tools, len(body.encode())


def fit(upstream: Upstream, messages: list[dict[str, Any]], tools: list[dict[str, Any]], size: int) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        async with httpx.AsyncClient() as client:
            return await tokens.fit(client, upstream, messages, tools, size, 32000)

    return asyncio.run(run())


def test_a_claude_code_sized_body_is_not_refused_on_an_estimate() -> None:
    messages, tools, size = claude_code_sized()
    assert tokens.estimate(size) > CONTEXT, "the body must look too long by bytes alone"
    upstream = Upstream("mlx-lm", "http://127.0.0.1:9/v1", ApiKind.OPENAI, context_length=CONTEXT)
    prompt, max_tokens = fit(upstream, messages, tools, size)
    assert prompt > CONTEXT  # the estimate, sent on all the same
    assert max_tokens == CONTEXT // 4  # room to answer; the backend's own limit answers a prompt truly too long


@pytest.mark.slow
def test_a_claude_code_sized_body_is_counted_with_the_model_folders_tokenizer() -> None:
    from tests.smollm2 import smollm2_dir

    messages, tools, size = claude_code_sized()
    folder = str(smollm2_dir())
    upstream = Upstream(
        "mlx-lm", "http://127.0.0.1:9/v1", ApiKind.OPENAI, context_length=CONTEXT, tokenizer_folder=folder
    )
    prompt, max_tokens = fit(upstream, messages, tools, size)
    # SmolLM2's template leaves tools out, as mlx_lm.server renders it: the system prompt and question remain.
    assert 1000 < prompt < 2500, prompt
    assert max_tokens == CONTEXT - prompt


@pytest.mark.slow
def test_a_prompt_counted_past_the_context_is_refused() -> None:
    from tests.smollm2 import smollm2_dir

    messages, tools, size = claude_code_sized()
    upstream = Upstream(
        "mlx-lm", "http://127.0.0.1:9/v1", ApiKind.OPENAI, context_length=1024, tokenizer_folder=str(smollm2_dir())
    )
    with pytest.raises(ApiError) as raised:
        fit(upstream, messages, tools, size)
    assert raised.value.status == 400 and "prompt is too long" in raised.value.message
