"""A scripted OpenAI-compatible backend for tests: replays fixed chat-completion streams and faults.

The script is chosen by an `x-script` header, else by a `[script:NAME]` marker in the last user
message, else by the server's default (`--script`). It records the last request body (`GET /_last`)
so tests can assert the exact translation, and answers `/v1/tokenize` with a deterministic count.

    python -m tests.scripted_backend --port 8081 --script tools

A test tool, not a product backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Chunk = dict[str, Any]
_MARKER = re.compile(r"\[script:([a-z0-9_]+)\]")


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> Chunk:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    choice.update(extra)
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


def usage(prompt: int, completion: int, cached: int | None = None) -> Chunk:
    u: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": u}


def tc(index: int | None, id: str | None = None, name: str | None = None, args: str | None = None) -> Chunk:
    """A tool-call delta; `index=None` leaves the index out, as some servers do."""
    call: dict[str, Any] = {} if index is None else {"index": index}
    if id:
        call["id"], call["type"] = id, "function"
    function: dict[str, Any] = {}
    if name:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call["function"] = function
    return chunk({"tool_calls": [call]})


SCRIPTS: dict[str, list[Chunk]] = {
    "text": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " world"}),
        chunk(finish="stop"),
        usage(12, 2),
    ],
    "tools": [
        chunk({"role": "assistant", "content": "Let me check."}),
        tc(0, "call_a", "Read", '{"file_'),
        tc(1, "call_b", "Grep", '{"pattern":'),
        tc(0, args='path": "/tmp/a.txt"}'),
        tc(1, args=' "TODO"}'),
        tc(2, "call_c", "Bash", ""),
        tc(2, args='{"command": "ls"}'),
        chunk(finish="tool_calls"),
        usage(30, 20),
    ],
    "reasoning": [
        chunk({"role": "assistant", "reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing."}),
        chunk({"content": "Answer."}),
        chunk(finish="stop"),
        usage(10, 5),
    ],
    "leak": [
        chunk({"content": "I will read it.\n<tool"}),
        chunk({"content": '_call>\n{"name": "Read", "arguments": {"file_path": "/tmp/x"}}\n</tool_'}),
        chunk({"content": "call>"}),
        chunk(finish="stop"),
        usage(9, 9),
    ],
    "cached": [chunk({"content": "ok"}), chunk(finish="stop"), usage(1000, 1, cached=900)],
    "stopseq": [chunk({"content": "one two"}), chunk(finish="stop", stop_reason="END"), usage(5, 2)],
    # SGLang names the matched stop string `matched_stop`; `stop_reason` may be there and null.
    "stopseq_sglang": [
        chunk({"content": "one two"}),
        chunk(finish="stop", stop_reason=None, matched_stop="END"),
        usage(5, 2),
    ],
    "length": [chunk({"content": "cut"}), chunk(finish="length"), usage(5, 1)],
    "nousage": [chunk({"content": "a"}), chunk({"content": "b"}), chunk(finish="stop")],
    # Ollama 0.20: every parallel call has index 0, told apart only by its id (ollama/ollama#15457).
    "same_index": [
        chunk({"role": "assistant", "content": ""}),
        tc(0, "call_a", "Read", '{"file_path": "/a"}'),
        tc(0, "call_b", "Grep", '{"pattern": "x"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    # Calls without an index: an id starts a call, fragments without one continue the open call.
    "no_index": [
        tc(None, "call_a", "Read", '{"file_path":'),
        tc(None, args=' "/a"}'),
        tc(None, "call_b", "Grep", '{"pattern": "x"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    # Arguments as small models write them: a missing closer, unquoted keys, then a valid call.
    "bad_args": [
        chunk({"content": "Working."}),
        tc(0, "call_a", "Read", '{"file_path": "/a"'),
        tc(1, "call_b", "Bash", "{command: ls}"),
        tc(2, "call_c", "Grep", '{"pattern": "ok"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    # A reasoning backend, and text that arrives in the same delta as a tool call.
    "think_then_call": [
        chunk({"role": "assistant", "reasoning_content": "I should read it."}),
        chunk(
            {
                "content": "Reading.",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_r",
                        "type": "function",
                        "function": {"name": "Read", "arguments": '{"file_path": "/r"}'},
                    }
                ],
            }
        ),
        chunk(finish="tool_calls"),
        usage(15, 8),
    ],
    # A backend that gives one call a new id on every fragment (Poolside's API; mlx-openai-server did).
    "changing_id": [
        tc(0, "call_1", "Bash", '{"command":'),
        tc(0, "call_2", args=' "ls'),
        tc(0, "call_3", args=' -l"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    "changing_id_no_index": [
        tc(None, "call_1", "Bash", '{"command":'),
        tc(None, "call_2", args=' "ls'),
        tc(None, "call_3", args=' -l"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    # Parallel calls with neither index nor id (LiteLLM's interleaved-calls case), and calls sharing one id.
    "anonymous_calls": [
        tc(None, None, "Read", '{"file_path":'),
        tc(None, args=' "/a"}'),
        tc(None, None, "Grep", '{"pattern": "x"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    "shared_id": [
        tc(0, "call_0", "Read", '{"file_path": "/a"}'),
        tc(0, "call_0", "Grep", '{"pattern": "x"}'),
        chunk(finish="tool_calls"),
        usage(20, 10),
    ],
    # Reasoning that goes on after a tool call began.
    "think_after_call": [
        chunk({"role": "assistant", "reasoning_content": "First."}),
        chunk({"content": "Reading."}),
        tc(0, "call_r", "Read", '{"file_path":'),
        chunk({"reasoning_content": "Then more."}),
        tc(0, args=' "/r"}'),
        chunk(finish="tool_calls"),
        usage(15, 8),
    ],
    # A reply cut by max_tokens inside a character, decoded with replacement (our MLX server did this).
    "cut_character": [
        chunk({"content": "Shine "}),
        chunk({"content": "\N{GLOWING STAR}\ufffd"}),
        chunk(finish="length"),
        usage(5, 3),
    ],
    # A backend that leaves the stop sequence in the text and goes on past it.
    "stop_left_in": [
        chunk({"content": "one two E"}),
        chunk({"content": "ND three"}),
        chunk(finish="stop"),
        usage(5, 4),
    ],
}


# Errors llama-server 11434 answered on /v1/messages, as measured (a text-only model; a 512-token context).
LLAMA_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "llama_image": (
        500,
        {
            "code": 500,
            "message": "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            "type": "server_error",
        },
    ),
    "llama_context": (
        400,
        {
            "code": 400,
            "message": "request (2031 tokens) exceeds the available context size (512 tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 2031,
            "n_ctx": 512,
        },
    ),
}


class Backend:
    """The scripted backend's state: the default script and what it last received."""

    def __init__(
        self, default: str = "text", delay: float = 0.5, ready_after: float = 0.0, release: str | None = None
    ) -> None:
        self.default = default
        self.release = release  # the `held` scripts finish once this file exists
        self.ready_at = time.monotonic() + ready_after
        self.delay = delay
        self.last: Any = None
        self.last_headers: dict[str, str] = {}
        self.requests = 0
        self.health_hits = 0  # liveness probes answered: lets a test wait for one between two requests
        self.active = 0  # streams being sent now: a client that left must bring this back to 0
        self.peers: list[int] = []  # the client port of each chat request, oldest first
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/tokenize", self.tokenize, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/_last", self.last_body, methods=["GET"]),
                Route("/_stats", self.stats, methods=["GET"]),
                Route("/anthropic/v1/messages", self.anthropic_messages, methods=["POST"]),
            ]
        )

    def _script(self, request: Request, body: Any) -> str:
        if "x-script" in request.headers:
            return request.headers["x-script"]
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "user":
                found = _MARKER.search(json.dumps(message.get("content")))
                return found.group(1) if found else self.default
        return self.default

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.last, self.requests = body, self.requests + 1
        self.last_headers = {k: v for k, v in request.headers.items() if k != "authorization"}
        self.peers.append(request.client.port if request.client else 0)  # which connection each call came on
        name = self._script(request, body)
        if name == "error500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
        if name == "context":
            error = {
                "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
            return JSONResponse({"error": error}, status_code=400)
        if name == "novision" and _has_image(body):
            # What a server with a text-only model answers to image parts (our MLX server does).
            error = {"message": "this model does not accept images", "type": "invalid_request_error", "code": 400}
            return JSONResponse({"error": error}, status_code=400)
        if name == "novision":
            name = "text"
        if name == "json":
            message = {"role": "assistant", "content": "whole"}
            return JSONResponse({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        if name == "slow_headers":
            await asyncio.sleep(self.delay)
            name = "text"
        return StreamingResponse(self._stream(name), media_type="text/event-stream")

    async def _stream(self, name: str) -> AsyncIterator[bytes]:
        self.active += 1
        try:
            async for item in self._script_events(name):
                yield item
        finally:
            self.active -= 1

    async def _script_events(self, name: str) -> AsyncIterator[bytes]:
        if name == "slow":
            await asyncio.sleep(self.delay)
            name = "text"
        if name == "hang":
            yield _event(chunk({"content": "a"}))
            await asyncio.sleep(3600)
        if name == "drop":
            yield _event(chunk({"content": "partial"}))
            yield b'data: {"choices": [{"delta": {"content": "tor'
            raise ConnectionAbortedError("scripted drop")  # the server closes the connection mid-event
        if name in ("prefill_quiet", "prefill_progress"):
            # Our MLX server's protocol: a prefill report when admitted, a role-only chunk, then the first
            # token after a long prefill: in silence, or with a progress report every 0.1 s (for 3 x delay).
            yield _prefill(0)
            yield _event(chunk({"role": "assistant", "content": ""}))
            if name == "prefill_quiet":
                await asyncio.sleep(self.delay)
            else:
                for step in range(int(self.delay * 30)):
                    await asyncio.sleep(0.1)
                    yield _prefill(step)
            for item in (chunk({"content": "Hello"}), chunk({"content": " world"}), chunk(finish="stop")):
                yield _event(item)
            yield _event(usage(1000, 2, cached=900))
            yield b"data: [DONE]\n\n"
            return
        if name in ("held", "held_fail"):
            # A long answer, ended by the test: the first text arrives now, the rest once `release` exists.
            yield _event(chunk({"role": "assistant", "content": "partial "}))
            while not (self.release and os.path.exists(self.release)):
                await asyncio.sleep(0.05)
            if name == "held_fail":
                yield _event({"error": {"message": "out of memory"}})
                return
            name = "text"
        if name == "ticks":  # a steady stream: a token every 20 ms for 4 s (gaps the proxy adds show)
            yield _event(chunk({"role": "assistant", "content": ""}))
            for _ in range(200):
                await asyncio.sleep(0.02)
                yield _event(chunk({"content": "."}))
            name = "text"
        if name == "midstream_error":
            yield _event(chunk({"content": "x"}))
            yield _event({"error": {"message": "out of memory"}})
            return
        if name == "say":
            # The model writes, in pieces of three characters, the text after `[script:say]` in the last user message.
            text = _said(self.last)
            yield _event(chunk({"role": "assistant", "content": ""}))
            for at in range(0, len(text), 3):
                yield _event(chunk({"content": text[at : at + 3]}))
            yield _event(chunk(finish="stop"))
            yield _event(usage(40, len(text) // 3))
            yield b"data: [DONE]\n\n"
            return
        for item in SCRIPTS[name]:
            yield _event(item)
        yield b"data: [DONE]\n\n"

    async def anthropic_messages(self, request: Request) -> Response:
        """A minimal Anthropic-speaking endpoint (what llama-server offers), for relay tests."""
        self.last = await request.json()
        self.last_headers = {k: v for k, v in request.headers.items() if k not in ("authorization", "x-api-key")}
        self.last_headers["has-x-api-key"] = str("x-api-key" in request.headers)
        name = self._script(request, self.last)
        if name in LLAMA_ERRORS:  # llama-server answers its /v1/messages errors in OpenAI's shape
            status, error = LLAMA_ERRORS[name]
            return JSONResponse({"error": error}, status_code=status)
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": self.last.get("model"),
            "content": [{"type": "text", "text": "relayed"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }
        return JSONResponse(message)

    async def tokenize(self, request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"count": len(json.dumps(body.get("messages"))) // 4})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def health(self, request: Request) -> Response:
        self.health_hits += 1
        if time.monotonic() < self.ready_at:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"requests": self.requests, "active": self.active, "health": self.health_hits})

    async def last_body(self, request: Request) -> Response:
        return JSONResponse(self.last)


def _said(body: Any) -> str:
    """What follows `[script:say]` in the last user message."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content).partition("[script:say]")[2]
    return ""


def _has_image(body: Any) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") == "image_url"
        for message in body.get("messages") or []
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


def _event(value: Chunk) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


def _prefill(step: int) -> bytes:
    report = {"prompt_tokens": 1000, "cached_tokens": 900, "processed": min(1000, 900 + step)}
    return b": prefill " + json.dumps(report).encode() + b"\n"


class ServerThread:
    """Runs an ASGI app with the proxy's runner on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)
        self._server: Any = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        from launcher.proxy import serve_proxy

        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            try:
                self._server = await serve_proxy(self.app, self.host, self.port)
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self.port = self._server.port
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await self._server.stop(grace=2.0)

        self._loop.run_until_complete(main())
        self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the test server did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (a coroutine factory) on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None and self._thread.is_alive():
            assert self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the test server thread did not stop")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--script",
        default="text",
        choices=sorted(
            [*SCRIPTS, "drop", "hang", "slow", "error500", "prefill_quiet", "prefill_progress", "held", "held_fail"]
        ),
    )
    parser.add_argument("--release", default=None, help="the held scripts finish once this file exists")
    parser.add_argument(
        "--exit-on-sigterm", action="store_true", help="die at once on SIGTERM instead of finishing responses"
    )
    parser.add_argument("--delay", type=float, default=0.5, help="seconds of silence for the slow scripts")
    parser.add_argument("--ready-after", type=float, default=0.0, help="/health answers 503 until then")
    args = parser.parse_args()
    import uvicorn

    backend = Backend(args.script, args.delay, args.ready_after, args.release)
    app: Any = backend.app
    if args.exit_on_sigterm:
        import signal

        async def exit_on_sigterm(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                # Installed once uvicorn has put in its own handlers (which let open responses finish first).
                signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            await backend.app(scope, receive, send)

        app = exit_on_sigterm
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


# --------------------------------------------------------------------------------------------
# A request shaped like Claude Code 2.1.197's (sizes and structure as observed; text synthetic)

_TOOL_NAMES = [
    "Task",
    "Bash",
    "Glob",
    "Grep",
    "LS",
    "ExitPlanMode",
    "Read",
    "Edit",
    "MultiEdit",
    "Write",
    "NotebookEdit",
    "WebFetch",
    "TodoWrite",
    "WebSearch",
    "BashOutput",
    "KillShell",
    "SlashCommand",
    "Skill",
    "AskUserQuestion",
    "EnterPlanMode",
    "ListMcpResources",
    "ReadMcpResource",
    "TaskOutput",
    "TaskStop",
]


def claude_code_tool(name: str, size: int = 2000) -> dict[str, Any]:
    description = f"Use the {name} tool when it fits. " + ("It follows the usual rules of the workspace. " * 40)
    return {
        "name": name,
        "description": description[: max(100, size - 600)],
        "input_schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": f"The absolute path {name} works on"},
                "limit": {"type": "integer", "minimum": 1, "description": "How many lines at most"},
                "mode": {"type": "string", "enum": ["fast", "full"], "description": "How thorough to be"},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    }


def claude_code_body(conversation: str = "a1f", stream: bool = True, turns: int = 2) -> dict[str, Any]:
    """A ~76 KB Messages request with everything Claude Code sends; `conversation` varies the billing line."""
    prompt = "You are an interactive CLI tool that helps users with software engineering tasks. " * 285
    agents = "- general-purpose: searches code, researches questions, runs multi-step tasks.\n" * 75
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<system-reminder>\nAs you answer, use the context below.\n</system-reminder>",
                },
                {"type": "text", "text": "List the Python files and read the README."},
            ],
        },
        {"role": "system", "content": f"Available agent types:\n{agents}"},
    ]
    for turn in range(turns):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should look first.", "signature": "sig"},
                    {"type": "text", "text": f"Step {turn}: looking."},
                    {"type": "tool_use", "id": f"toolu_{turn:02d}", "name": "Bash", "input": {"command": "ls"}},
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{turn:02d}", "content": "README.md\nsetup.py\n"},
                    {"type": "text", "text": "<system-reminder>\nTodo list is empty.\n</system-reminder>"},
                ],
            }
        )
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": stream,
        "system": [
            {
                "type": "text",
                "text": f"x-anthropic-billing-header: cc_version=2.1.197.{conversation}; cc_entrypoint=cli;",
            },
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}},
        ],
        "messages": messages,
        "tools": [claude_code_tool(name) for name in _TOOL_NAMES],
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_abc_account__session_123"},
        "temperature": 1,
    }


if __name__ == "__main__":
    main()
