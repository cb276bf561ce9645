"""`/v1/chat/completions` and `/v1/completions`: from a validated request to a queued generation and back.

A client that goes away cancels its generation: a stream's generator is closed by the server on
disconnect (its `finally` cancels the job); a non-streaming request watches for the disconnect
message while it waits. Either way the generation stops at its next step and its queue place frees.

Two additions to OpenAI's stream, both ignorable by any client: while the prompt is read, SSE comment lines
`: prefill {"prompt_tokens": N, "cached_tokens": C, "processed": P}` (the first when the request is admitted,
before any data; then one per prefill chunk), so a proxy knows the backend is working and what the prompt
cache supplied before the first token; and the stop sequence that ended a reply as the choice's
`stop_reason` (vLLM's field), streaming and not. Requests carry Claude Code's `x-claude-code-session-id` and
`x-claude-code-agent-id` headers through to the prompt cache, which keeps each conversation's slots apart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from adapters.contracts import AGENT_HEADER, SESSION_HEADER
from adapters.mlx_server import responses
from adapters.mlx_server.cache_slots import Owner
from adapters.mlx_server.chat import Prompt, encode_text, render_chat
from adapters.mlx_server.engine import EngineStoppedError, QueueFullError, Ticket
from adapters.mlx_server.jobs import Event, Failed, Finished, GenerationRequest, Job, Prefill, TextChunk
from adapters.mlx_server.output import CollectedOutput, OutputAssembler, reasoning_splitter_for, tool_stream_for
from adapters.mlx_server.pool import LoadedModel, UnknownModelError
from adapters.mlx_server.runtime import Readiness, Runtime
from adapters.mlx_server.sampling import SamplingParams, parse_logit_bias
from adapters.mlx_server.schemas import ChatCompletionRequest, CompletionRequest, GenerationFields, error_response

# Seconds a client is told to wait after a 503 (queue full or still loading).
RETRY_AFTER_SECONDS = 2


class RequestError(Exception):
    """A request the server refuses; carries the HTTP response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class CompletionRoutes:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        ticket = self._runtime.engine.expect()
        try:
            loaded = await self._model(body.model)
            try:
                prompt = await asyncio.to_thread(
                    render_chat, loaded, body.messages, body.tools, template_kwargs=body.chat_template_kwargs
                )
            except ValueError as exc:
                raise RequestError(error_response(400, str(exc), param="messages")) from None
            namespace = json.dumps(body.chat_template_kwargs, sort_keys=True) if body.chat_template_kwargs else ""
            job = self._submit(loaded, prompt, body, owner_of(request), ticket, namespace)
        except RequestError as refused:
            return refused.response
        finally:
            ticket.close()
        tools = tool_stream_for(loaded, body.tools, self._runtime.config.tool_parser)
        assembler = OutputAssembler(reasoning_splitter_for(loaded, prompt.starts_in_reasoning, tools), tools)
        if body.stream:
            return _streaming(self._chat_stream(job, loaded.alias, assembler, body.include_usage), job)
        events = await collect_until_disconnect(request, job)
        output = CollectedOutput()
        for event in events:
            if isinstance(event, TextChunk):
                output.add(assembler.feed(event.text))
        output.add(assembler.finish())
        return _final(events, lambda done: responses.chat_completion(loaded.alias, output, done))

    async def complete(self, body: CompletionRequest, request: Request) -> Response:
        ticket = self._runtime.engine.expect()
        try:
            loaded = await self._model(body.model)
            if isinstance(body.prompt, list) and (not body.prompt or isinstance(body.prompt[0], int)):
                prompt = Prompt([int(t) for t in body.prompt])
            else:
                text = body.prompt if isinstance(body.prompt, str) else str(body.prompt[0])
                prompt = Prompt(await asyncio.to_thread(encode_text, loaded, text))
            job = self._submit(loaded, prompt, body, owner_of(request), ticket)
        except RequestError as refused:
            return refused.response
        finally:
            ticket.close()
        if body.stream:
            return _streaming(self._completion_stream(job, loaded.alias, body.include_usage), job)
        events = await collect_until_disconnect(request, job)
        text = "".join(e.text for e in events if isinstance(e, TextChunk))
        return _final(events, lambda done: responses.completion(loaded.alias, text, done))

    async def _model(self, requested: str | None) -> LoadedModel:
        runtime = self._runtime
        try:
            alias = runtime.pool.resolve_alias(requested)
        except UnknownModelError as exc:
            raise RequestError(error_response(404, str(exc), code="model_not_found", param="model")) from None
        if runtime.readiness is not Readiness.READY:
            message = runtime.error or "the model is still loading; retry shortly"
            raise RequestError(_unavailable(message, "model_loading"))
        try:
            return await runtime.model(alias)
        except Exception as exc:
            raise RequestError(error_response(500, f"cannot load model '{alias}': {exc}", type_="api_error")) from None

    def _submit(
        self,
        loaded: LoadedModel,
        prompt: Prompt,
        body: GenerationFields,
        owner: Owner,
        ticket: Ticket,
        namespace: str = "",
    ) -> Job:
        count = len(prompt.tokens)
        if count == 0:
            raise RequestError(error_response(400, "the prompt is empty", param="messages"))
        context = loaded.context_length
        if context is not None and count >= context:
            message = (
                f"prompt is too long: {count} tokens, but the model's maximum context length is {context} "
                "tokens; shorten the messages"
            )
            raise RequestError(error_response(400, message, code="context_length_exceeded", param="messages"))
        max_tokens = body.requested_max_tokens or self._runtime.config.default_max_tokens
        if context is not None:
            max_tokens = min(max_tokens, context - count)  # clamp rather than refuse prompt + max_tokens overflow
        try:
            defaults = self._runtime.config
            sampling = SamplingParams(
                temperature=defaults.temperature if body.temperature is None else body.temperature,
                top_p=defaults.top_p if body.top_p is None else body.top_p,
                top_k=body.top_k,
                min_p=body.min_p,
                seed=body.seed,
                logit_bias=parse_logit_bias(body.logit_bias, loaded.vocab_size),
                repetition_penalty=body.repetition_penalty,
                repetition_context_size=body.repetition_context_size,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
            )
        except ValueError as exc:
            raise RequestError(error_response(400, str(exc), param="logit_bias")) from None
        generation = GenerationRequest(
            loaded,
            prompt.tokens,
            sampling,
            body.stop_list,
            max_tokens,
            request_id=secrets.token_hex(6),
            cache_namespace=namespace,
            owner=owner,
        )
        try:
            return self._runtime.engine.submit(generation, asyncio.get_running_loop(), ticket)
        except QueueFullError as exc:
            raise RequestError(_unavailable(f"the server is busy: {exc}; retry shortly", "queue_full")) from None
        except EngineStoppedError as exc:
            raise RequestError(_unavailable(str(exc), "shutting_down")) from None

    async def _chat_stream(
        self, job: Job, model: str, assembler: OutputAssembler, include_usage: bool
    ) -> AsyncIterator[str]:
        stream = responses.ChatStream(model)
        started = False
        async for event in job.events():
            if isinstance(event, Prefill):
                yield responses.prefill_comment(event)
                if started:
                    continue
            if not started:
                started = True
                yield responses.sse(stream.chunk({"role": "assistant", "content": ""}))
            if isinstance(event, TextChunk):
                for out in assembler.feed(event.text):
                    yield responses.sse(stream.event_chunk(out))
            elif isinstance(event, Finished):
                for out in assembler.finish():
                    yield responses.sse(stream.event_chunk(out))
                reason = responses.chat_finish_reason(event.finish_reason, stream.tool_calls > 0)
                yield responses.sse(stream.chunk({}, reason, event.stop_sequence))
                if include_usage:
                    yield responses.sse(stream.usage_chunk(event.usage))
            elif isinstance(event, Failed):
                yield responses.sse(_error_body(event))
        yield responses.sse("[DONE]")

    async def _completion_stream(self, job: Job, model: str, include_usage: bool) -> AsyncIterator[str]:
        stream = responses.CompletionStream(model)
        async for event in job.events():
            if isinstance(event, Prefill):
                yield responses.prefill_comment(event)
            elif isinstance(event, TextChunk):
                yield responses.sse(stream.chunk(event.text))
            elif isinstance(event, Finished):
                reason = "length" if event.finish_reason == "length" else "stop"
                yield responses.sse(stream.chunk("", reason, stop_reason=event.stop_sequence))
                if include_usage:
                    yield responses.sse(stream.chunk("", usage=event.usage))
            else:
                yield responses.sse(_error_body(event))
        yield responses.sse("[DONE]")


def owner_of(request: Request) -> Owner:
    """The conversation a request belongs to, from Claude Code's headers (anonymous without them)."""
    headers = request.headers
    return Owner(headers.get(SESSION_HEADER, ""), headers.get(AGENT_HEADER, ""))


def _streaming(chunks: AsyncIterator[str], job: Job) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            # Runs when the client disconnects too (the server closes this generator): stop generating.
            job.cancel()

    return StreamingResponse(guarded(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def collect_until_disconnect(request: Request, job: Job) -> list[Event]:
    """All events of `job`; if the client disconnects first, cancel the job and return what came."""
    collected: list[Event] = []

    async def collect() -> None:
        async for event in job.events():
            collected.append(event)

    async def disconnected() -> None:
        # The body was read already, so the next message this request receives is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    collector = asyncio.ensure_future(collect())
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not collector.done():
            job.cancel()
            collector.cancel()
    return collected


def _final(events: list[Event], build: Callable[[Finished], dict[str, Any]]) -> Response:
    last = events[-1] if events else None
    if isinstance(last, Finished):
        return JSONResponse(build(last))
    if isinstance(last, Failed):
        return error_response(500, last.message, type_="api_error")
    return Response(status_code=499)  # the client left; nobody reads this


def _unavailable(message: str, code: str) -> JSONResponse:
    return error_response(
        503, message, type_="server_error", code=code, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def _error_body(event: Failed) -> dict[str, Any]:
    return {"error": {"message": event.message, "type": "api_error", "code": None, "param": None}}
