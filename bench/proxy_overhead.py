"""Latency the proxy adds in front of an OpenAI-style backend.

Starts the scripted test backend and the proxy as separate processes on 127.0.0.1, then times
interleaved requests, direct to the backend and through the proxy: a tiny request and a ~76 KB
Claude Code-shaped one, non-streaming (whole response) and streaming (time to the first text delta).
Prints one table. Not a test.

The proxy runs on the loop anyclaude itself uses (uvloop); `--loop asyncio` runs it on asyncio's
default loop. `--ccr` adds claude-code-router rows (`ccr start`, run with HOME in a temporary directory
so no real config is touched); they are skipped with a note when `ccr` is not on PATH. Its non-streaming rows are not
measured: ccr asks the backend for a non-streaming answer, and the scripted backend always streams.

The proxy keeps its request log and metrics as `anyclaude serve` does (in a temporary folder), so
their cost is in the figures. `--baseline DIR` adds rows for the proxy of another checkout
(e.g. `git worktree add /tmp/base HEAD`), timed in the same interleaved loop: on a shared machine,
two separate runs differ more than a change.

    python bench/proxy_overhead.py [--runs 300] [--loop asyncio] [--ccr] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
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

def observer():  # the request log and metrics, as `anyclaude serve` runs them (in a throw-away folder)
    try:
        from launcher.observe.metrics import Metrics
        from launcher.observe.recorder import LogSettings, Recorder
    except ImportError:  # a --baseline checkout from before the request log
        return ()
    import pathlib
    metrics = Metrics()
    recorder = Recorder(pathlib.Path(sys.argv[4]) / "requests.db", LogSettings, sinks=(metrics.observe,))
    recorder.start()
    return (recorder,)

async def main():
    upstream = Upstream("scripted", sys.argv[1], ApiKind.OPENAI)
    app = create_proxy_app(StaticGate(upstream), ProxyOptions(), *observer())
    server = await serve_proxy(app, "127.0.0.1", int(sys.argv[2]))
    await server.wait()

if sys.argv[3] == "asyncio":
    asyncio.run(main())
else:
    try:
        from launcher.loop import run  # the loop `anyclaude serve` and `anyclaude run` use (uvloop)
    except ImportError:  # a --baseline checkout from before it: it ran on asyncio's loop
        run = asyncio.run
    run(main())
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
def process(argv: list[str], ready_url: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Iterator[None]:
    proc = subprocess.Popen(argv, cwd=cwd, env=env or {**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_ready(ready_url)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def ccr_router(chat_url: str, port: int) -> Iterator[str | None]:
    """claude-code-router in front of `chat_url` on 127.0.0.1:port; yields its base URL, or None without ccr."""
    exe = shutil.which("ccr")
    if exe is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ccr-home-") as home:
        folder = Path(home) / ".claude-code-router"
        folder.mkdir()
        config = {
            "HOST": "127.0.0.1",
            "PORT": port,
            "LOG": False,
            "Providers": [{"name": "scripted", "api_base_url": chat_url, "api_key": "none", "models": ["scripted"]}],
            "Router": {"default": "scripted,scripted"},
        }
        (folder / "config.json").write_text(json.dumps(config))
        url = f"http://127.0.0.1:{port}"
        try:
            with process([exe, "start"], url + "/", env={**os.environ, "HOME": home}, cwd=Path(home)):
                yield url
        finally:
            # A stale pid file makes the next `ccr start` believe a server is running.
            (folder / ".claude-code-router.pid").unlink(missing_ok=True)


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
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="the proxy's event loop")
    parser.add_argument("--ccr", action="store_true", help="add claude-code-router rows (needs `ccr` on PATH)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose proxy gets rows of its own")
    args = parser.parse_args()
    backend_port, proxy_port, ccr_port, base_port = free_port(), free_port(), free_port(), free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    proxy = f"http://127.0.0.1:{proxy_port}"
    chat_url = backend + "/v1/chat/completions"
    backend_argv = [sys.executable, "-m", "tests.scripted_backend", "--port", str(backend_port), "--script", "text"]
    logs = tempfile.TemporaryDirectory(prefix="anyclaude-bench-")  # each proxy's request log goes here
    proxy_argv = [sys.executable, "-c", PROXY_MAIN, backend + "/v1", str(proxy_port), args.loop, logs.name]

    tiny = {"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    real = claude_code_body(stream=False)
    cases: list[tuple[str, dict[str, object]]] = [
        ("tiny", tiny),
        (f"claude code ({len(json.dumps(real)) // 1024} KB)", real),
    ]
    rows: list[tuple[str, list[float], list[float]]] = []
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(logs)
        stack.enter_context(process(backend_argv, backend + "/health"))
        stack.enter_context(process(proxy_argv, proxy + "/"))
        baseline = f"http://127.0.0.1:{base_port}" if args.baseline else None
        if args.baseline:
            root = args.baseline.resolve()
            base_argv = [sys.executable, "-c", PROXY_MAIN, backend + "/v1", str(base_port), args.loop, logs.name]
            stack.enter_context(process(base_argv, f"{baseline}/", {**os.environ, "PYTHONPATH": str(root)}, root))
        ccr = stack.enter_context(ccr_router(chat_url, ccr_port)) if args.ccr else None
        if args.ccr and ccr is None:
            notes.append("ccr rows skipped: `ccr` is not on PATH (npm install -g @musistudio/claude-code-router)")
        client = stack.enter_context(httpx.Client(timeout=30))
        for name, body in cases:
            anthropic_whole = json.dumps({**body, "stream": False}).encode()
            anthropic_stream = json.dumps({**body, "stream": True}).encode()
            openai = json.dumps(translate_request(parse_messages_request(body), None)).encode()
            # label -> (direct call, {row prefix: call through a proxy})
            measures: dict[str, tuple[Callable[[], float], dict[str, Callable[[], float]]]] = {
                f"{name}, non-stream": (
                    partial(timed_whole, client, chat_url, openai),
                    {"": partial(timed_whole, client, proxy + "/v1/messages", anthropic_whole)},
                ),
                f"{name}, stream first delta": (
                    partial(timed_first_delta, client, chat_url, openai, '"Hello"'),
                    {"": partial(timed_first_delta, client, proxy + "/v1/messages", anthropic_stream, "text_delta")},
                ),
            }
            if baseline is not None:
                url = baseline + "/v1/messages"
                measures[f"{name}, non-stream"][1]["baseline: "] = partial(timed_whole, client, url, anthropic_whole)
                via_base = partial(timed_first_delta, client, url, anthropic_stream, "text_delta")
                measures[f"{name}, stream first delta"][1]["baseline: "] = via_base
            if ccr is not None:
                via_ccr = partial(timed_first_delta, client, ccr + "/v1/messages", anthropic_stream, "text_delta")
                measures[f"{name}, stream first delta"][1]["ccr: "] = via_ccr
            for label, (direct, vias) in measures.items():
                for _ in range(20):  # warm connections and caches
                    direct()
                    for via in vias.values():
                        via()
                d: list[float] = []
                through: dict[str, list[float]] = {prefix: [] for prefix in vias}
                for _ in range(args.runs):  # interleaved, so load on a shared machine hits all alike
                    d.append(direct())
                    for prefix, via in vias.items():
                        through[prefix].append(via())
                rows.extend((prefix + label, d, p) for prefix, p in through.items())
    if ccr is not None:
        notes.append(
            "ccr non-stream rows not measured: ccr asks for a non-streaming answer, the scripted backend streams"
        )
    print(f"\nproxy overhead ({args.loop} loop), {args.runs} interleaved runs each (ms)\n")
    header = f"{'case':<48} {'direct p50':>10} {'proxy p50':>10} {'added p50':>10} {'direct p99':>10} {'proxy p99':>10}"
    print(header)
    print("-" * len(header))
    for label, d, p in rows:
        added = statistics.median(p) - statistics.median(d)
        print(
            f"{label:<48} {statistics.median(d) * 1e3:>10.2f} {statistics.median(p) * 1e3:>10.2f} "
            f"{added * 1e3:>10.2f} {percentile(d, 0.99) * 1e3:>10.2f} {percentile(p, 0.99) * 1e3:>10.2f}"
        )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
