"""The proxy's endpoints. Each turns every failure into an Anthropic-shaped error and reports each
backend call's outcome on its lease exactly once (a half-open breaker waits for that report).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapters.base import ApiKind
from adapters.contracts import is_default_model
from launcher.bridge import chat, passthrough, tokens
from launcher.bridge.asgi import ClientGone, ClosingStreamingResponse, once, unless_disconnected
from launcher.bridge.codec import DecodeError, dumps, loads
from launcher.bridge.errors import ApiError, invalid_request, overloaded
from launcher.bridge.guard import too_large
from launcher.bridge.leaks import make_text_parser
from launcher.bridge.models import MessagesRequest, parse_count_tokens_request, parse_messages_request
from launcher.bridge.options import ProxyOptions, is_pattern
from launcher.bridge.request import Prepared, build_body, for_small_model, has_images, prepare
from launcher.bridge.upstream import BackendGate, BackendUnavailable, ClientPool, Lease
from launcher.observe.hook import NO_OBSERVER, Observer

log = logging.getLogger("anyclaude.proxy")


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(value), status_code=status, media_type="application/json", headers=headers)


def error_response(error: ApiError) -> Response:
    return Response(
        error.body_bytes(), status_code=error.status, media_type="application/json", headers=error.headers()
    )


class Handlers:
    def __init__(self, gate: BackendGate, options: ProxyOptions, observer: Observer = NO_OBSERVER) -> None:
        self.gate = gate
        self.options = options
        self.observer = observer  # the request log
        self.pool = ClientPool()

    async def _body(self, request: Request) -> Any:
        """The decoded JSON body. Raises ApiError (413 past the limit, 400 if not a JSON object)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # a body without content-length is capped here
            size += len(chunk)
            if size > self.options.max_body_bytes:
                raise too_large(self.options.max_body_bytes)
            chunks.append(chunk)
        raw = b"".join(chunks)
        request.state.raw = raw
        if self.options.log_bodies:
            log.debug("request body %s: %s", request.url.path, raw[:65536].decode(errors="replace"))
        try:
            value = loads(raw)
        except DecodeError as exc:
            raise invalid_request(f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise invalid_request("the request body must be a JSON object")
        return value

    async def _acquire(self) -> Lease:
        try:
            return await self.gate.acquire()
        except BackendUnavailable as exc:
            raise (
                overloaded(exc.message, exc.retry_after)
                if exc.status == 529
                else ApiError(exc.status, exc.message, retry_after=exc.retry_after)
            ) from None

    async def guarded(self, request: Request, work: Any) -> Response:
        try:
            response: Response = await work
            return response
        except ApiError as exc:
            return error_response(exc)
        except ClientGone:
            return Response(status_code=499)
        except Exception:  # the proxy must keep serving whatever one request did
            log.exception("unexpected failure answering %s %s", request.method, request.url.path)
            return error_response(ApiError(500, "internal error in the proxy; see the anyclaude log"))

    # ----- endpoints

    async def messages(self, request: Request) -> Response:
        record = self.observer.begin(request, "messages")
        return self.observer.end(record, request, await self.guarded(request, self._messages(request)))

    async def count_tokens(self, request: Request) -> Response:
        record = self.observer.begin(request, "count_tokens")
        return self.observer.end(record, request, await self.guarded(request, self._count_tokens(request)))

    async def _messages(self, request: Request) -> Response:
        body = await self._body(request)
        req = parse_messages_request(body)
        prepared = prepare(req, self.options.strip_billing_header)
        lease = await self._acquire()
        upstream = lease.upstream
        served = self.options.backend_model(req.model, upstream.model)
        self.observer.routed(request, upstream.name, req.model, served, req.stream)
        if upstream.api is ApiKind.ANTHROPIC:
            return await self._relay(request, lease, body)
        return await self._chat(request, lease, req, prepared, served)

    async def _count_tokens(self, request: Request) -> Response:
        body = await self._body(request)
        req = parse_count_tokens_request(body)
        prepared = prepare(req, self.options.strip_billing_header)
        lease = await self._acquire()
        upstream = lease.upstream
        served = self.options.backend_model(req.model, upstream.model)
        self.observer.routed(request, upstream.name, req.model, served, False)
        if upstream.api is ApiKind.ANTHROPIC:
            return await self._relay(request, lease, body)
        client = self.pool.checkout(upstream)
        try:
            counted = await tokens.count(client, upstream, prepared.messages, prepared.tools)
        finally:
            lease.report(True)
            await self.pool.checkin(upstream)
        return json_response({"input_tokens": counted.tokens})

    async def _relay(self, request: Request, lease: Lease, body: Any) -> Response:
        upstream, outcome = lease.upstream, lease
        raw = passthrough.relay_body(request.state.raw, body, upstream, self.options)
        client = self.pool.checkout(upstream)
        release = once(lambda: self.pool.checkin(upstream))
        try:
            return await passthrough.relay(request, client, upstream, raw, self.options, outcome, release)
        except ApiError as exc:
            outcome.report(exc.status < 500)
            await release()
            raise

    async def _chat(
        self, request: Request, lease: Lease, req: MessagesRequest, prepared: Prepared, model: str | None
    ) -> Response:
        upstream, outcome = lease.upstream, lease
        client = self.pool.checkout(upstream)
        release = once(lambda: self.pool.checkin(upstream))
        try:
            if upstream.accepts_images is False and has_images(prepared.messages):
                # Raised in here so the permit is reported: a half-open breaker's one trial must come back.
                raise invalid_request(
                    f"this model does not accept images (backend {upstream.name} serves a text-only model)"
                )
            if upstream.small_model and prepared.tools:
                prepared = for_small_model(prepared)
            size = len(request.state.raw)
            prompt, max_tokens = await tokens.fit(
                client, upstream, prepared.messages, prepared.tools, size, req.max_tokens
            )
            payload = dumps(build_body(req, prepared, model, max_tokens))
            parser = None
            # tool_choice "none": the model may not call, so nothing it writes is taken for a call.
            if prepared.tools and prepared.tool_choice != "none" and self.options.parse_text_tool_calls:
                observer = self.observer
                parser = make_text_parser(
                    prepared.tools, lambda recovered, failed: observer.text_tool_calls(request, recovered, failed)
                )
            poster = self.pool.poster(upstream)
            forwarded = chat.session_headers(request.headers)
            one_call = prepared.no_parallel or upstream.small_model
            call = chat.Call(
                upstream, poster, payload, req.model, prompt, req.stop_sequences, parser, forwarded, one_call
            )
            if req.stream:
                return await self._stream(call, outcome, release)
            message = await unless_disconnected(request, chat.collect(call, self.options))
        except ApiError as exc:
            outcome.report(exc.status < 500)
            await release()
            raise
        except BaseException:
            outcome.report(True)  # the client left or the proxy failed: not the backend's fault
            await release()
            raise
        outcome.report(True)
        await release()
        return json_response(message)

    async def _stream(self, call: chat.Call, outcome: Lease, release: Any) -> Response:
        pending = asyncio.ensure_future(chat.open_stream(call))
        # Wait briefly for the headers so an immediate failure is a real HTTP error, not an event.
        await asyncio.wait((pending,), timeout=self.options.ping_interval)
        if pending.done() and pending.exception() is not None:
            raise pending.exception()  # type: ignore[misc]

        async def close() -> None:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            elif not pending.cancelled() and pending.exception() is None:
                await pending.result().aclose()
            outcome.report(True)  # no-op when the stream already reported
            await release()

        return ClosingStreamingResponse(
            chat.stream(call, self.options, pending, outcome),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
            on_close=once(close),
        )

    # ----- small endpoints

    def models(self) -> list[dict[str, Any]]:
        ids = [m for m in self.options.models if not is_pattern(m)] or ["claude-local"]
        return [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in ids]

    async def list_models(self, request: Request) -> Response:
        data = self.models()
        return json_response({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    def serves(self, model_id: str) -> bool:
        """Whether a request for `model_id` is answered: an id `/v1/models` lists, one a configured pattern
        matches, or a Claude model id (what Claude Code asks for; the backend's model answers it)."""
        if is_default_model(model_id) or model_id in (m["id"] for m in self.models()):
            return True
        return self.options.backend_model(model_id, None) is not None

    async def get_model(self, request: Request) -> Response:
        wanted = request.path_params["model_id"]
        if not self.serves(wanted):
            return error_response(ApiError(404, f"model: {wanted} is not served here (see GET /v1/models)"))
        entry = {"type": "model", "id": wanted, "display_name": wanted, "created_at": "2025-01-01T00:00:00Z"}
        return json_response(entry)

    async def health(self, request: Request) -> Response:
        snapshot = self.gate.snapshot()
        return json_response({"status": "ok", "proxy": {"host": self.options.host}, **snapshot})

    async def root(self, request: Request) -> Response:
        return json_response({"status": "ok", "service": "anyclaude"})

    async def aclose(self) -> None:
        await self.pool.aclose()


__all__ = ["Handlers", "error_response", "json_response"]
