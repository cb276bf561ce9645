"""The HTTP surface: `create_app` and the OpenAI-compatible routes.

Routes are closures over one `Runtime`, so the app works the same standalone or mounted at any
prefix inside another app. Every error has the OpenAI shape `{"error": {...}}`; validation errors are 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.mlx_server.chat import Prompt, encode_text, render_chat
from adapters.mlx_server.completions import CompletionRoutes
from adapters.mlx_server.config import ServerConfig, validate_models
from adapters.mlx_server.pool import UnknownModelError
from adapters.mlx_server.prompt_cache import PromptCacheStore
from adapters.mlx_server.runtime import Readiness, Runtime
from adapters.mlx_server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeRequest,
    describe_validation_errors,
    error_response,
)


def create_app(
    config: ServerConfig,
    embedded: bool = False,
    *,
    cache_store: PromptCacheStore | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the server app.

    Args:
        config: server settings.
        embedded: True when another app mounts this one: the host then owns the lifespan and must
            enter `app.state.runtime.lifespan()` (or call `start()`/`stop()`); otherwise the app's
            own lifespan starts the model pool.
        cache_store: where generations get their starting KV cache (default: prompt-cache slots as configured).
        on_fatal: called when the default model cannot be loaded.

    Raises:
        ModelNotFoundError: a configured model is not a local folder nor in the local HF cache.
    """
    paths = validate_models(config)
    runtime = Runtime(config, paths, cache_store, on_fatal)

    def own_lifespan(_: FastAPI) -> Any:
        return runtime.lifespan()

    app = FastAPI(
        title="anyclaude MLX server",
        lifespan=None if embedded else own_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    _install_error_handlers(app)
    _add_routes(app, runtime)
    return app


def app_runtime(app: FastAPI) -> Runtime:
    """The runtime `create_app` built for `app`: the host of an embedded app enters its lifespan and reads its
    health and cache through it (typed, in one place, instead of through Starlette's untyped `app.state`)."""
    runtime = app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _install_error_handlers(app: FastAPI) -> None:
    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, describe_validation_errors(list(exc.errors())))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), type_="invalid_request_error")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def _add_routes(app: FastAPI, runtime: Runtime) -> None:
    generation = CompletionRoutes(runtime)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = runtime.health()
        return JSONResponse(body, status_code=200 if runtime.readiness is Readiness.READY else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m["id"], "object": "model", "created": 0, "owned_by": "anyclaude", **m}
                for m in runtime.pool.snapshot()
            ],
        }

    @app.get("/v1/cache")
    async def prompt_cache() -> dict[str, Any]:
        return runtime.cache_store.describe()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await generation.chat(body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await generation.complete(body, request)

    @app.post("/v1/tokenize")
    async def tokenize(body: TokenizeRequest) -> Response:
        try:
            alias = runtime.pool.resolve_alias(body.model)
        except UnknownModelError as exc:
            return error_response(404, str(exc), code="model_not_found", param="model")
        loaded = await runtime.model(alias)
        if body.messages is not None:
            try:
                prompt: Prompt = await asyncio.to_thread(
                    render_chat,
                    loaded,
                    body.messages,
                    body.tools,
                    add_generation_prompt=body.add_generation_prompt,
                    template_kwargs=body.chat_template_kwargs,
                )
            except ValueError as exc:
                return error_response(400, str(exc), param="messages")
            count = len(prompt.tokens)
        else:
            text = body.text if body.text is not None else body.prompt or ""
            count = len(await asyncio.to_thread(encode_text, loaded, text))
        return JSONResponse({"count": count, "model": alias})

    # Same routes without the /v1 prefix, as some clients (and mlx-lm's server) accept both.
    app.add_api_route("/chat/completions", chat_completions, methods=["POST"], include_in_schema=False)
    app.add_api_route("/completions", completions, methods=["POST"], include_in_schema=False)
