"""End to end on the real SmolLM2-135M-Instruct through the official openai SDK (slow: a real model on CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from adapters.openblas import openblas_env
from tests.integration.mlx_server_process import ServerProcess, start_server, stop_server
from tests.smollm2 import smollm2_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # The mlx[cpu] wheel's own BLAS is ~11x slower than OpenBLAS, which the mlx-server kind preloads.
    env = openblas_env()
    started = start_server(smollm2_dir(), tmp_path_factory.mktemp("logs"), env=env, deadline_s=180)
    yield started
    stop_server(started)


def test_smollm2_knows_the_capital_of_france(smollm2_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=smollm2_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    reply = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or ""), reply
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
