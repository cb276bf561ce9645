"""Our MLX server never sends a replacement character for a reply cut inside a multibyte character.

The tiny model's byte-level tokenizer has one token per byte; a logit bias makes greedy decoding pick the lead
byte of a four-byte character, so `max_tokens` always ends the reply before the character is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.mlx_server_process import ServerProcess, start_server, stop_server
from tests.tiny_model import tiny_model, tiny_model_dir  # noqa: F401  (fixtures)

LEAD_BYTE = 0xF0  # the first byte of a four-byte UTF-8 character (an emoji)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:  # noqa: F811
    started = start_server(tiny_model, tmp_path_factory.mktemp("logs"), ["--alias", "tiny"])
    yield started
    stop_server(started)


def byte_token(model: Path, byte: int) -> int:
    """The id of the token for one byte, in GPT-2's byte-to-character mapping (0xA1-0xFF map to themselves)."""
    vocab = json.loads((model / "tokenizer.json").read_text())["model"]["vocab"]
    return int(vocab[chr(byte)])


@pytest.mark.parametrize("max_tokens", [1, 3])
def test_a_reply_cut_inside_a_character_ends_before_it(
    server: ServerProcess,
    tiny_model: Path,  # noqa: F811
    max_tokens: int,
) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    request = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Draw a star"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logit_bias": {str(byte_token(tiny_model, LEAD_BYTE)): 100},
    }
    whole = client.chat.completions.create(**request)  # type: ignore[call-overload]
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == max_tokens
    assert "\ufffd" not in (whole.choices[0].message.content or "")
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(**request, stream=True)  # type: ignore[call-overload]
        if chunk.choices
    )
    assert "\ufffd" not in streamed
    assert streamed == (whole.choices[0].message.content or "")
