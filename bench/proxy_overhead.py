"""Latency the proxy adds in front of an OpenAI-style backend.

Starts the scripted test backend and the proxy as separate processes on 127.0.0.1, then times
interleaved requests, direct to the backend and through the proxy: a tiny request and a ~76 KB
Claude Code-shaped one, non-streaming (whole response) and streaming (time to the first text delta).
Prints one table. Not a test.

    python bench/proxy_overhead.py [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.bridge.models import parse_messages_request  # noqa: E402
from launcher.bridge.request import translate_request  # noqa: E402
from tests.scripted_backend import claude_code_body  # noqa: E402

PROXY_MAIN = """
import asyncio, sys
from adapters.base import ApiKind
from launcher.proxy import ProxyOptions, StaticGate, Upstream, create_proxy_app, serve_proxy

async def main():
    upstream = Upstream("scripted", sys.argv[1], ApiKind.OPENAI)
    server = await serve_proxy(create_proxy_app(StaticGate(upstream), ProxyOptions()), "127.0.0.1", int(sys.argv[2]))
    await server.wait()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline} s")


@contextmanager
def process(argv: list[str], ready_url: str) -> Iterator[None]:
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_ready(ready_url)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_whole(client: httpx.Client, url: str, body: bytes) -> float:
    start = time.perf_counter()
    response = client.post(url, content=body, headers={"content-type": "application/json"})
    response.read()
    assert response.status_code == 200, response.text
    return time.perf_counter() - start


def timed_first_delta(client: httpx.Client, url: str, body: bytes, marker: str) -> float:
    start = time.perf_counter()
    elapsed = None
    with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as response:
        for line in response.iter_lines():  # read to the end: the connection then goes back to the pool
            if elapsed is None and marker in line:
                elapsed = time.perf_counter() - start
    if elapsed is None:
        raise AssertionError("no content delta in the stream")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="proxy overhead benchmark")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    backend_port, proxy_port = free_port(), free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    proxy = f"http://127.0.0.1:{proxy_port}"
    backend_argv = [sys.executable, "-m", "tests.scripted_backend", "--port", str(backend_port), "--script", "text"]
    proxy_argv = [sys.executable, "-c", PROXY_MAIN, backend + "/v1", str(proxy_port)]

    tiny = {"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    real = claude_code_body(stream=False)
    cases: list[tuple[str, dict[str, object]]] = [
        ("tiny", tiny),
        (f"claude code ({len(json.dumps(real)) // 1024} KB)", real),
    ]
    rows: list[tuple[str, list[float], list[float]]] = []
    with (
        process(backend_argv, backend + "/health"),
        process(proxy_argv, proxy + "/"),
        httpx.Client(timeout=30) as client,
    ):
        for name, body in cases:
            anthropic_whole = json.dumps({**body, "stream": False}).encode()
            anthropic_stream = json.dumps({**body, "stream": True}).encode()
            openai = json.dumps(translate_request(parse_messages_request(body), None)).encode()
            chat_url, messages_url = backend + "/v1/chat/completions", proxy + "/v1/messages"
            measures: dict[str, tuple[Callable[[], float], Callable[[], float]]] = {
                f"{name}, non-stream": (
                    partial(timed_whole, client, chat_url, openai),
                    partial(timed_whole, client, messages_url, anthropic_whole),
                ),
                f"{name}, stream first delta": (
                    partial(timed_first_delta, client, chat_url, openai, '"Hello"'),
                    partial(timed_first_delta, client, messages_url, anthropic_stream, "text_delta"),
                ),
            }
            for label, (direct, via) in measures.items():
                for _ in range(20):  # warm connections and caches
                    direct(), via()
                d: list[float] = []
                p: list[float] = []
                for _ in range(args.runs):
                    d.append(direct())
                    p.append(via())
                rows.append((label, d, p))
    print(f"\nproxy overhead, {args.runs} interleaved runs each (ms)\n")
    header = f"{'case':<38} {'direct p50':>10} {'proxy p50':>10} {'added p50':>10} {'direct p99':>10} {'proxy p99':>10}"
    print(header)
    print("-" * len(header))
    for label, d, p in rows:
        added = statistics.median(p) - statistics.median(d)
        print(
            f"{label:<38} {statistics.median(d) * 1e3:>10.2f} {statistics.median(p) * 1e3:>10.2f} "
            f"{added * 1e3:>10.2f} {percentile(d, 0.99) * 1e3:>10.2f} {percentile(p, 0.99) * 1e3:>10.2f}"
        )


if __name__ == "__main__":
    main()
