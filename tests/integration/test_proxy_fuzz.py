"""Property: whatever body arrives, the proxy answers 200 or a 4xx in Anthropic's shape, never a 5xx,
and still answers a valid request afterwards (docs/reliability.md 17)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import ApiKind
from launcher.proxy import ProxyOptions, StaticGate, Upstream, create_proxy_app
from tests.scripted_backend import Backend, ServerThread

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
block_types = st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "document", "weird", ""])
blocks = st.fixed_dictionaries(
    {"type": block_types},
    optional={
        "text": json_values,
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": json_values,
        "source": json_values,
        "is_error": json_values,
    },
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", 3]), "content": st.text() | st.lists(blocks)}
    ),
    max_size=4,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.text(max_size=10) | json_values,
        "max_tokens": st.integers(-5, 100_000) | json_values,
        "messages": messages | json_values,
        "system": st.text() | st.lists(blocks) | json_values,
        "stream": st.booleans() | json_values,
        "tools": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}, optional={"input_schema": json_values})),
        "tool_choice": json_values,
        "stop_sequences": json_values,
        "temperature": json_values,
        "thinking": json_values,
    },
)


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    scripted = Backend()
    with ServerThread(scripted.app) as backend:
        upstream = Upstream("s", backend.url + "/v1", ApiKind.OPENAI)
        with ServerThread(create_proxy_app(StaticGate(upstream), ProxyOptions())) as proxy:
            yield proxy.url


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        body = response.json()
        assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        assert body["error"]["type"] in {"invalid_request_error", "request_too_large", "not_found_error"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_any_body_gets_a_well_formed_answer(proxy_url: str, body: dict[str, Any], path: str) -> None:
    check(httpx.post(proxy_url + path, json=body))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_get_a_well_formed_answer(proxy_url: str, raw: bytes) -> None:
    check(httpx.post(proxy_url + "/v1/messages", content=raw))


def test_valid_request_after_fuzzing(proxy_url: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(proxy_url + "/v1/messages", json=body)
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "Hello world"
