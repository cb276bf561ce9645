"""`POST /v1/messages` against an OpenAI-style backend: open the stream, translate it, answer.

The backend is always asked to stream. A streaming client gets Anthropic events as chunks arrive
(with pings during a long prefill); a non-streaming client gets the folded message. Failures before
the first byte are real HTTP errors; after it, an `error` event ends the stream cleanly.

Timing: until the first token (text, thinking or a tool call; a role-only chunk is none) only
`first_byte_timeout` applies, and any line from the backend, SSE comments included, proves it alive;
after it, `idle_timeout`. A prefill of a long prompt on a CPU is never taken for a hung backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.contracts import SESSION_HEADERS
from launcher.bridge import sse
from launcher.bridge.codec import DecodeError, loads
from launcher.bridge.errors import ApiError
from launcher.bridge.failures import backend_status_error, connect_failure
from launcher.bridge.heartbeat import PING_MARK, Ping, StreamTimeout, paced
from launcher.bridge.leaks import TextToolParser
from launcher.bridge.options import ProxyOptions
from launcher.bridge.response import MessageAssembler, completion_as_chunk
from launcher.bridge.stream import StreamTranslator, UpstreamStreamError
from launcher.bridge.upstream import Reporter, Upstream
from launcher.bridge.wire import Answer, Poster, UpstreamHTTPError
from launcher.waiting import BOARD, Watch

log = logging.getLogger("anyclaude.bridge")

Event = dict[str, Any]


@dataclass
class Call:
    """One request to an OpenAI-style backend, ready to send."""

    upstream: Upstream
    poster: Poster
    payload: bytes
    model: str  # the id the client asked for, echoed back
    prompt_tokens: int
    stop_sequences: list[str] | None
    parser: TextToolParser | None
    forwarded: dict[str, str] = field(default_factory=dict)  # the client's headers a backend may use
    one_call: bool = False  # only the first tool call of a reply goes on (no parallel calls, or a small model)


def session_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that travel on to an OpenAI-style backend."""
    return {name: value for name in SESSION_HEADERS if (value := headers.get(name))}


async def open_stream(call: Call) -> Answer:
    """Send the request and wait for the response headers. Raises ApiError for a failed call."""
    headers = {**call.forwarded, "content-type": "application/json", "accept": "text/event-stream"}
    if call.upstream.api_key:
        headers["authorization"] = f"Bearer {call.upstream.api_key}"
    url = call.upstream.base_url.rstrip("/") + "/chat/completions"
    try:
        response = await call.poster.post(url, call.payload, headers)
    except UpstreamHTTPError as exc:
        raise connect_failure(call.upstream.name, exc.kind) from None
    if response.status_code >= 300:
        try:
            body = await response.aread()
        except UpstreamHTTPError:
            body = b""
        finally:
            await response.aclose()
        raise backend_status_error(
            response.status_code, body, call.upstream.context_length, call.prompt_tokens
        ) from None
    return response


async def _events(
    call: Call, response: Answer, options: ProxyOptions, waited: float, started: bool = False
) -> AsyncIterator[list[Event] | Ping]:
    """Anthropic events of one backend response in non-empty batches (one per backend chunk), with ping
    marks. Raises ApiError on a failure. `started`: the client already has a `message_start`.

    Batches let the streaming path write all events of a chunk at once: one socket write (and one
    TCP segment, the sockets are NODELAY) instead of one per event. `message_start` goes out with the
    first events or the first ping, so a prefill report that came before carries the true usage split.
    """
    translator = StreamTranslator(call.model, call.prompt_tokens, call.stop_sequences, call.parser, call.one_call)
    if "text/event-stream" not in response.headers.get("content-type", "text/event-stream"):
        # A backend that ignored `stream: true` answered with one JSON completion.
        try:
            whole = loads(await response.aread())
        except DecodeError:
            raise sse.TornStream("the backend answered with something that is neither SSE nor JSON") from None
        chunk = completion_as_chunk(whole) if isinstance(whole, dict) else {}
        whole_events = translator.feed(chunk) + translator.finish()
        yield whole_events if started else translator.start() + whole_events
        return
    loop = asyncio.get_running_loop()
    upstream_events = sse.OpenAIEvents(sse.iter_lines(response.aiter_bytes()))
    heard = False  # any line from the backend yet
    first_wait = max(0.001, options.first_byte_timeout - waited)

    def limit() -> tuple[float, bool]:
        if translator.generating:
            return options.idle_timeout, False
        return (options.first_byte_timeout if heard else first_wait), True

    last_out = loop.time()
    watch = Watch(BOARD, upstream_events.__aiter__())  # how far the prompt is read, for the launcher to show
    async for item in paced(watch.items(), options.ping_interval, limit):
        if isinstance(item, Ping):
            events: list[Event] = []
        elif isinstance(item, sse.Comment):
            heard = True
            if (report := item.prefill()) is not None and not started:
                translator.prefill(report)
            events = []
        else:
            heard = True
            events = translator.feed(item)
            if translator.generating:
                watch.answered()
        if events:
            if not started:
                started, events = True, translator.start() + events
            yield events
            last_out = loop.time()
        elif isinstance(item, Ping) or loop.time() - last_out >= options.ping_interval:
            # Lines that produce no event (prefill reports, tool calls being collected) send the client
            # nothing: without a ping it would take a working backend for a dead one.
            if not started:
                started = True
                yield translator.start()
            yield PING_MARK
            last_out = loop.time()
    if not upstream_events.done and not translator.finished:
        raise sse.TornStream("the backend closed the stream before the response was complete")
    events = translator.finish()
    yield events if started else translator.start() + events


def _mid_stream_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StreamTimeout | UpstreamStreamError | sse.TornStream):
        return ApiError(500, str(exc))
    if isinstance(exc, UpstreamHTTPError):
        return ApiError(500, f"the backend connection failed mid-response ({exc.kind})")
    return ApiError(500, f"the response failed ({type(exc).__name__})")


_FAILURES = (ApiError, StreamTimeout, UpstreamStreamError, sse.TornStream, UpstreamHTTPError)


async def collect(call: Call, options: ProxyOptions) -> dict[str, Any]:
    """The whole message, for a non-streaming client. Raises ApiError."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await open_stream(call)
    assembler = MessageAssembler()
    try:
        async for batch in _events(call, response, options, loop.time() - started):
            if not isinstance(batch, Ping):
                for event in batch:
                    assembler.add(event)
    except _FAILURES as exc:
        raise _mid_stream_error(exc) from None
    finally:
        await response.aclose()
    return assembler.message


async def stream(
    call: Call, options: ProxyOptions, pending: asyncio.Task[Answer], gate: Reporter
) -> AsyncIterator[bytes]:
    """SSE bytes for a streaming client. `pending` is the request whose headers may not be in yet.

    Never raises once started: a failure becomes one `error` event and the end of the stream.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent_start = False
    response: Answer | None = None
    try:
        while not pending.done():
            # A backend that sends headers only with its first token: keep the client alive meanwhile.
            if loop.time() - started > options.first_byte_timeout:
                raise StreamTimeout(options.first_byte_timeout, True)
            await asyncio.wait((pending,), timeout=options.ping_interval)
            if not pending.done():
                if not sent_start:
                    sent_start = True
                    yield sse.encode(_placeholder_start(call))
                yield sse.PING
        response = pending.result()
        async for batch in _events(call, response, options, loop.time() - started, sent_start):
            if isinstance(batch, Ping):
                yield sse.PING
            else:
                yield b"".join([sse.encode(event) for event in batch])
        gate.report(True)
    except _FAILURES as exc:
        error = _mid_stream_error(exc)
        gate.report(error.status < 500)
        log.warning("stream from %s failed: %s", call.upstream.name, error.message)
        yield sse.encode(error.body())
    finally:
        if response is not None:
            await response.aclose()


def _placeholder_start(call: Call) -> Event:
    translator = StreamTranslator(call.model, call.prompt_tokens)
    return translator.start()[0]
