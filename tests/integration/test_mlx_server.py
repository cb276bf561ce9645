"""Our MLX server as a real process on 127.0.0.1 with a tiny random llama, driven by the openai SDK.

The model's output is gibberish but deterministic at temperature 0, so stop strings and penalties are
checked against what greedy decoding actually produced.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.mlx_server_process import ServerProcess, start_server, stop_server
from tests.tiny_model import tiny_model, tiny_model_dir  # noqa: F401  (fixtures)

CONTEXT = 2048
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:  # noqa: F811
    started = start_server(
        tiny_model, tmp_path_factory.mktemp("logs"), ["--alias", "tiny", "--extra-model", f"other={tiny_model}"]
    )
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def tokenize(server: ServerProcess, **body: Any) -> int:
    response = httpx.post(server.url + "/v1/tokenize", json=body, timeout=30)
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


def greedy_chunks(client: openai.OpenAI, max_tokens: int = 40, **extra: Any) -> list[str]:
    stream = client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=max_tokens, temperature=0, stream=True, **extra
    )
    return [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]


def test_health_is_503_while_loading_then_200_with_figures(server: ServerProcess) -> None:
    assert server.statuses[0] == 503 and server.statuses[-1] == 200, server.statuses
    body = server.health()
    assert body["status"] == "ready"
    assert body["model"] == "tiny"
    queue, memory = body["queue"], body["memory"]
    assert isinstance(queue, dict) and isinstance(memory, dict)
    assert (queue["waiting"], queue["running"], queue["max"], queue["cancelled"]) == (0, False, 8, 0)
    assert memory["active_bytes"] > 0


def test_health_and_models_say_whether_the_model_can_call_tools(server: ServerProcess) -> None:
    # The tiny model's template renders `tools` (tests/tiny_model.py).
    models = server.health()["models"]
    assert isinstance(models, list) and models[0]["tools"]["can_call"] is True, models
    listed = httpx.get(server.url + "/v1/models", timeout=10).json()["data"]
    assert listed[0]["tools"] == {"can_call": True, "why": "its chat template renders tool definitions"}


def test_models_lists_every_alias_default_first(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny", "other"]


def test_chat_reports_usage_matching_tokenize(client: openai.OpenAI, server: ServerProcess) -> None:
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=7, temperature=0)
    assert reply.choices[0].finish_reason == "length"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == tokenize(server, messages=USER)
    assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_stream_matches_non_stream_and_ends_with_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_text_completion_stream_and_non_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=9, temperature=0)
    assert whole.usage is not None and whole.usage.completion_tokens == 9
    streamed = client.completions.create(
        model="tiny", prompt="The quick brown fox", max_tokens=9, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text


def test_tokenize_counts_text_and_grows_with_tools(server: ServerProcess) -> None:
    tool = {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
    plain = tokenize(server, messages=USER)
    assert tokenize(server, messages=USER, tools=[tool]) > plain
    assert tokenize(server, text="Paris") >= 1


def _split_stop(chunks: list[str]) -> tuple[str, int]:
    """A two-character stop string spanning two token pieces, at its first occurrence in the text."""
    text = "".join(chunks)
    offset = 0
    for left, right in itertools.pairwise(chunks):
        offset += len(left)
        if left and right and left[-1].isascii() and right[0].isascii():
            stop = left[-1] + right[0]
            if text.find(stop) == offset - 1:
                return stop, offset - 1
    pytest.fail(f"no split stop candidate in {chunks!r}")


def test_stop_sequence_split_across_tokens_is_never_sent(client: openai.OpenAI) -> None:
    chunks = greedy_chunks(client)
    stop, cut = _split_stop(chunks)
    expected = "".join(chunks)[:cut]
    whole = client.chat.completions.create(model="tiny", messages=USER, max_tokens=40, temperature=0, stop=[stop])
    assert whole.choices[0].message.content == expected
    assert whole.choices[0].finish_reason == "stop"
    streamed = greedy_chunks(client, stop=[stop])
    assert "".join(streamed) == expected


def test_the_stop_sequence_that_ended_a_reply_is_reported(client: openai.OpenAI) -> None:
    chunks = greedy_chunks(client)
    stop, _ = _split_stop(chunks)
    never = "\u2603never\u2603"
    whole = client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=40, temperature=0, stop=[never, stop]
    )
    assert whole.choices[0].model_extra is not None
    assert whole.choices[0].model_extra["stop_reason"] == stop
    stream = client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=40, temperature=0, stop=[never, stop], stream=True
    )
    ends = [chunk.choices[0] for chunk in stream if chunk.choices and chunk.choices[0].finish_reason]
    assert len(ends) == 1 and ends[0].finish_reason == "stop"
    assert ends[0].model_extra is not None and ends[0].model_extra["stop_reason"] == stop
    unstopped = client.chat.completions.create(model="tiny", messages=USER, max_tokens=5, temperature=0)
    assert unstopped.choices[0].model_extra is not None
    assert unstopped.choices[0].model_extra.get("stop_reason") is None


def test_an_image_to_this_text_only_model_is_refused(server: ServerProcess) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    message = {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, image]}
    for stream in (False, True):
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": [message], "max_tokens": 5, "stream": stream},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "does not accept images" in error["message"]


def test_penalties_change_greedy_output(client: openai.OpenAI) -> None:
    plain = "".join(greedy_chunks(client, max_tokens=30))
    penalized = "".join(greedy_chunks(client, max_tokens=30, extra_body={"repetition_penalty": 5.0}))
    present = "".join(greedy_chunks(client, max_tokens=30, presence_penalty=2.0, frequency_penalty=2.0))
    assert penalized != plain
    assert present != plain


def test_logit_bias_forces_one_token(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="tiny", prompt="Paris", max_tokens=5, temperature=0, logit_bias={"300": 100}
    )
    words = reply.choices[0].text.split()  # token 300 is " st": one word per token
    assert len(words) == 5 and len(set(words)) == 1, reply.choices[0].text


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str | None:
        reply = client.chat.completions.create(
            model="tiny", messages=USER, max_tokens=20, temperature=1.0, top_p=0.95, seed=seed
        )
        return reply.choices[0].message.content

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_prompt_longer_than_context_is_400_with_both_numbers(client: openai.OpenAI, server: ServerProcess) -> None:
    long: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 300}
    ]
    count = tokenize(server, messages=long)
    assert count > CONTEXT
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=long, max_tokens=5)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert str(count) in error["message"] and str(CONTEXT) in error["message"]


def test_max_tokens_past_the_context_is_clamped(client: openai.OpenAI, server: ServerProcess) -> None:
    near: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 72}
    ]
    count = tokenize(server, messages=near)
    assert count < CONTEXT - 5, count
    reply = client.chat.completions.create(model="tiny", messages=near, max_tokens=4000, temperature=0)
    assert reply.usage is not None and reply.usage.completion_tokens == CONTEXT - count
    assert reply.choices[0].finish_reason == "length"


def test_unknown_model_is_404_listing_the_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=USER, max_tokens=2)
    assert "tiny" in str(caught.value) and "other" in str(caught.value)


def test_claude_ids_and_no_model_use_the_default(client: openai.OpenAI, server: ServerProcess) -> None:
    reply = client.chat.completions.create(model="claude-sonnet-4-5", messages=USER, max_tokens=2)
    assert reply.model == "tiny"
    bare = httpx.post(server.url + "/v1/chat/completions", json={"messages": USER, "max_tokens": 2}, timeout=30)
    assert bare.status_code == 200 and bare.json()["model"] == "tiny"


def test_other_model_loads_on_first_use(client: openai.OpenAI, server: ServerProcess) -> None:
    reply = client.chat.completions.create(model="other", messages=USER, max_tokens=2)
    assert reply.model == "other"
    models = server.health()["models"]
    assert isinstance(models, list)
    loaded = {m["id"]: m["loaded"] for m in models}
    assert loaded == {"tiny": True, "other": True}


def test_bad_requests_get_openai_shaped_400(server: ServerProcess) -> None:
    bodies: list[dict[str, object]] = [
        {"messages": USER, "temperature": 7},
        {"messages": []},
        {"messages": USER, "logit_bias": {"99999": 5}},
        {"prompt": "x", "n": 3},
    ]
    for body in bodies:
        path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        response = httpx.post(server.url + path, json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"
