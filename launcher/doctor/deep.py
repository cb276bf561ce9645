"""`anyclaude doctor --deep`: real requests through the proxy to the chosen backend.

The running proxy of that mode is used when there is one; otherwise a `serve` is started for the
check on a free port and always stopped afterwards. Three requests follow, each its own check:
a short stream (time to first token, tokens/s), a forced tool call and its result (round trip),
and a two-turn conversation whose second turn should be served partly from the prompt cache.
Requests go out with httpx: the anthropic SDK is a development dependency only.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from adapters.base import Check, CheckStatus
from launcher.config import Settings
from launcher.control import proxied, stop
from launcher.defaults import load_or_default
from launcher.errors import AnyclaudeError, ConfigError
from launcher.paths import Home
from launcher.supervision import statefile
from launcher.supervision.ports import free_port

PROXY, STREAM, TOOLS, CACHE = "deep.proxy", "deep.stream", "deep.tools", "deep.cache"
# Requests after the proxy is up share this budget; starting a serve has its own (startupTimeout + grace).
BUDGET_S = 120.0
START_GRACE_S = 10.0
STOP_WAIT_S = 15.0
POLL_S = 0.1
MAX_TOKENS = 16
# A tool call in a local model's markup (tags, name, empty arguments) needs more than 16 tokens.
TOOL_MAX_TOKENS = 64
TAIL_LINES = 3
MODEL = "claude-haiku-4-5"
ANTHROPIC_VERSION = "2023-06-01"
GET_TIME = {
    "name": "get_time",
    "description": "Returns the current time. Call it whenever the user asks what time it is.",
    "input_schema": {"type": "object", "properties": {}},
}
# Long enough that a prompt cache has a prefix worth keeping between the two turns.
CACHE_SYSTEM = "You are a terse assistant. Answer in a few words. " + " ".join(
    f"Rule {n}: keep answers short and plain." for n in range(1, 41)
)


class BadAnswer(Exception):
    """The proxy answered, but not with what the check needs; the message is the finding."""


@dataclass(frozen=True)
class Bridge:
    """Where the deep checks send their requests, with which headers, until when."""

    url: str
    headers: Mapping[str, str]
    deadline: float

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def deep_checks(
    config_path: str | None, mode: str | None, env: Mapping[str, str], home: Home, cwd: Path
) -> list[Check]:
    """The `deep.*` checks for the chosen mode; a serve started for them is stopped before this returns."""
    try:
        # Without a config file anywhere, the built-in default is what `anyclaude` and `serve` run.
        settings = load_or_default(config_path, mode, env, cwd)
    except ConfigError as exc:
        fix = exc.hint or "Fix the config (see the config checks)."
        return [Check(PROXY, CheckStatus.FAIL, f"no backend to check: {exc.message}", fix)]
    logs = f"See `anyclaude logs {settings.mode}`."
    with proxy_for(settings, env, home, cwd) as (url, found):
        if url is None:
            return [found]
        key = settings.config.api_key
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": key.get_secret_value()} if key else {})}
        bridge = Bridge(url.rstrip("/"), headers, time.monotonic() + BUDGET_S)
        # trust_env=False: an HTTP(S)_PROXY in the environment must not carry requests meant for localhost.
        with httpx.Client(trust_env=False) as client:
            checks: list[tuple[str, Callable[[httpx.Client, Bridge], Check], str]] = [
                (STREAM, stream_check, f"The proxy does not stream this backend's answers. {logs}"),
                (TOOLS, tools_check, f"A tool call did not make the round trip. {logs}"),
                (CACHE, cache_check, f"The two-turn conversation failed. {logs}"),
            ]
            return [found, *(_guarded(name, run, fix, client, bridge) for name, run, fix in checks)]


def _guarded(
    name: str, run: Callable[[httpx.Client, Bridge], Check], fix: str, client: httpx.Client, bridge: Bridge
) -> Check:
    """One check, with transport failures and malformed answers translated into its finding."""
    if bridge.left() <= 0:
        return Check(name, CheckStatus.WARN, f"not run: the deep checks used their {BUDGET_S:.0f} s", fix)
    try:
        return run(client, bridge)
    except httpx.TimeoutException:
        return Check(name, CheckStatus.FAIL, f"no answer within the deep checks' {BUDGET_S:.0f} s", fix)
    except httpx.HTTPError as exc:
        return Check(name, CheckStatus.FAIL, f"request to {bridge.url} failed: {exc or type(exc).__name__}", fix)
    except BadAnswer as exc:
        return Check(name, CheckStatus.FAIL, str(exc), fix)


# ------------------------------------------------------------------------------------ the proxy


@contextlib.contextmanager
def proxy_for(settings: Settings, env: Mapping[str, str], home: Home, cwd: Path) -> Iterator[tuple[str | None, Check]]:
    """The URL of a proxy serving `settings.mode` (None when there is none) and the `deep.proxy` check.

    A proxy already running for the mode is used as it is; otherwise one is started and, whatever
    happens while the caller uses it, stopped on exit.
    """
    running = proxied(home, settings.mode)
    if running is not None and running.record.proxy_url:
        url = running.record.proxy_url
        yield url, Check(PROXY, CheckStatus.OK, f"using the running proxy at {url} ({running.state})")
        return
    argv = [sys.executable, "-m", "launcher", "serve", "--mode", settings.mode]
    if settings.path is not None:
        argv += ["--config", str(settings.path)]
    child_env = {**env, "ANYCLAUDE_PORT": str(free_port())}
    with tempfile.TemporaryFile() as output:
        # Output to a file, not a pipe: nobody reads a pipe while the checks run, and a full one blocks serve.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=child_env, cwd=cwd
        )
        try:
            yield _await_ready(proc, settings, home, output)
        finally:
            _stop_serve(proc, settings.mode, home)


def _await_ready(
    proc: subprocess.Popen[bytes], settings: Settings, home: Home, output: IO[bytes]
) -> tuple[str | None, Check]:
    """Poll the state file the started serve writes until it is ready, FATAL, gone, or too late."""
    started = time.monotonic()
    limit = settings.entry.startup_timeout / 1000 + START_GRACE_S
    fix = f"Run `anyclaude serve --mode {settings.mode}` to watch it start; see `anyclaude logs {settings.mode}`."
    while True:
        record = statefile.read_record(home, settings.mode)
        # A record left by an earlier launcher is not this serve's.
        ours = record if record is not None and record.launcher_pid == proc.pid else None
        if ours is not None and ours.state in ("READY", "DEGRADED") and ours.proxy_url:
            took = time.monotonic() - started
            return ours.proxy_url, Check(PROXY, CheckStatus.OK, f"started one for the check in {took:.1f} s")
        if ours is not None and ours.state == "FATAL":
            # The supervisor's reason already quotes the backend's last log lines.
            problem = f"the serve started for the check went FATAL: {ours.reason or 'no reason given'}"
            return None, Check(PROXY, CheckStatus.FAIL, problem, fix)
        code = proc.poll()
        if code is not None:
            problem = f"the serve started for the check exited with code {code}"
            return None, Check(PROXY, CheckStatus.FAIL, _with_tail(problem, output), fix)
        if time.monotonic() - started > limit:
            state = ours.state if ours is not None else "no state file"
            problem = f"the serve started for the check was not ready within {limit:.0f} s ({state})"
            return None, Check(PROXY, CheckStatus.FAIL, _with_tail(problem, output), fix)
        time.sleep(POLL_S)


def _with_tail(problem: str, output: IO[bytes]) -> str:
    output.flush()
    output.seek(0)
    lines = [line.strip() for line in output.read().decode(errors="replace").splitlines() if line.strip()]
    return problem + (": " + " | ".join(lines[-TAIL_LINES:]) if lines else "")


def _stop_serve(proc: subprocess.Popen[bytes], mode: str, home: Home) -> None:
    """SIGTERM (serve's orderly stop), SIGKILL after STOP_WAIT_S; a backend it then left behind is stopped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    record = statefile.read_record(home, mode)
    # A killed serve cannot stop its backend; its state file proves which process that is.
    if record is not None and record.launcher_pid == proc.pid:
        with contextlib.suppress(AnyclaudeError):
            stop(home, mode)


# ------------------------------------------------------------------------------------ the requests


def stream_check(client: httpx.Client, bridge: Bridge) -> Check:
    """A short streamed answer: message_start, text deltas, message_stop; time to first token and tokens/s."""
    body = {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "messages": [{"role": "user", "content": "Count from 1 to 10, separated by spaces."}],
    }
    sent = time.monotonic()
    first: float | None = None
    types: list[str] = []
    output_tokens = 0
    with client.stream(
        "POST", f"{bridge.url}/v1/messages", json=body, headers=bridge.headers, timeout=bridge.left()
    ) as response:
        if response.status_code != 200:
            response.read()
            raise BadAnswer(_status_problem(response))
        for event in _sse(response.iter_lines()):
            kind = str(event.get("type"))
            types.append(kind)
            if kind == "error":
                raise BadAnswer(f"the stream ended with an error: {_error_message(event)}")
            delta = event.get("delta")
            if kind == "content_block_delta" and isinstance(delta, dict) and delta.get("type") == "text_delta":
                first = first if first is not None else time.monotonic()
            if kind == "message_delta" and isinstance(event.get("usage"), dict):
                output_tokens = _count(event["usage"], "output_tokens")
            if bridge.left() <= 0:
                raise httpx.ReadTimeout("the deep checks ran out of time")
    ended = time.monotonic()
    if "message_start" not in types or first is None or not types or types[-1] != "message_stop":
        raise BadAnswer(f"the stream was incomplete (events: {', '.join(_squeeze(types)) or 'none'})")
    rate = f", {(output_tokens - 1) / (ended - first):.1f} tokens/s" if output_tokens > 1 and ended > first else ""
    tokens = f"{output_tokens} token{'' if output_tokens == 1 else 's'}"
    finding = f"streamed {tokens}: first token after {first - sent:.2f} s{rate}"
    return Check(STREAM, CheckStatus.OK, finding)


def tools_check(client: httpx.Client, bridge: Bridge) -> Check:
    """A forced call of one tool, then its result: the reply must be a well-formed message."""
    ask = {"role": "user", "content": "What time is it? Use the get_time tool."}
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": TOOL_MAX_TOKENS,
        "messages": [ask],
        "tools": [GET_TIME],
        # Many local servers ignore tool_choice; it is sent anyway, and a reply without a call only warns.
        "tool_choice": {"type": "tool", "name": "get_time"},
    }
    reply = _post(client, bridge, body)
    calls = [block for block in reply["content"] if block.get("type") == "tool_use"]
    if not calls:
        fix = "Use a model whose chat template renders tools (llama-server needs --jinja); Claude Code relies on them."
        return Check(
            TOOLS, CheckStatus.WARN, "the model did not call the tool (its chat template may not render tools)", fix
        )
    results = [{"type": "tool_result", "tool_use_id": str(call.get("id")), "content": "12:00"} for call in calls]
    started = time.monotonic()
    body["messages"] = [ask, {"role": "assistant", "content": reply["content"]}, {"role": "user", "content": results}]
    del body["tool_choice"]  # forcing the tool again would ask for a second call instead of an answer
    _post(client, bridge, body)
    names = sorted({str(call.get("name")) for call in calls})
    called = "get_time" if names == ["get_time"] else f"{', '.join(names)} (asked for get_time)"
    finding = f"called {called}; the reply to its result is a well-formed message ({time.monotonic() - started:.1f} s)"
    return Check(TOOLS, CheckStatus.OK, finding)


def cache_check(client: httpx.Client, bridge: Bridge) -> Check:
    """Two turns where the second extends the first: the second should read cached prompt tokens."""
    first_turn = [{"role": "user", "content": "Name three colours."}]
    body: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "system": CACHE_SYSTEM, "messages": first_turn}
    reply = _post(client, bridge, body)
    # Only text goes back: a tool call here would need a tool result the check has no reason to invent.
    said = [block for block in reply["content"] if block.get("type") == "text" and block.get("text")]
    answer = said or [{"type": "text", "text": "Red, green, blue."}]
    body["messages"] = [
        *first_turn,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And three animals?"},
    ]
    usage = _post(client, bridge, body).get("usage")
    cached = _count(usage, "cache_read_input_tokens") if isinstance(usage, dict) else 0
    if cached <= 0:
        fix = "Turn on the backend's prompt cache if it has one: without it every turn reads the whole prompt again."
        return Check(CACHE, CheckStatus.WARN, "the backend reports no cached tokens", fix)
    total = cached + (_count(usage, "input_tokens") if isinstance(usage, dict) else 0)
    return Check(CACHE, CheckStatus.OK, f"turn 2 read {cached} of {total} prompt tokens from the cache")


def _post(client: httpx.Client, bridge: Bridge, body: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streamed request; the answer must be a well-formed Messages reply."""
    response = client.post(f"{bridge.url}/v1/messages", json=body, headers=bridge.headers, timeout=bridge.left())
    if response.status_code != 200:
        raise BadAnswer(_status_problem(response))
    try:
        reply = response.json()
    except ValueError:
        raise BadAnswer("the answer is not JSON") from None
    problem = _malformed(reply)
    if problem:
        raise BadAnswer(f"the answer is not a well-formed message: {problem}")
    result: dict[str, Any] = reply
    return result


def _malformed(reply: Any) -> str | None:
    if not isinstance(reply, dict):
        return "not an object"
    if reply.get("type") != "message" or reply.get("role") != "assistant":
        return f"type {reply.get('type')!r}, role {reply.get('role')!r}"
    content = reply.get("content")
    if not isinstance(content, list) or not all(isinstance(b, dict) and "type" in b for b in content):
        return "content is not a list of blocks"
    if "stop_reason" not in reply or not isinstance(reply.get("usage"), dict):
        return "no stop_reason or usage"
    return None


def _sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream (`event:` lines are redundant: payloads carry `type`)."""
    data: list[str] = []
    for line in _and_blank(lines):
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            try:
                event = json.loads("\n".join(data))
            except ValueError:
                event = None
            data = []
            yield event if isinstance(event, dict) else {"type": "invalid"}


def _and_blank(lines: Iterator[str]) -> Iterator[str]:
    yield from lines
    yield ""  # a stream cut after its last data line still delivers that event


def _status_problem(response: httpx.Response) -> str:
    try:
        message = _error_message(response.json())
    except ValueError:
        message = response.text[:200]
    return f"HTTP {response.status_code}: {message}"


def _error_message(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return json.dumps(payload)[:200]


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _squeeze(types: list[str]) -> list[str]:
    """Event types with repeats collapsed: `content_block_delta x12`."""
    out: list[str] = []
    for kind in types:
        if out and out[-1].split(" x")[0] == kind:
            head, _, times = out[-1].partition(" x")
            out[-1] = f"{head} x{int(times or 1) + 1}"
        else:
            out.append(kind)
    return out
