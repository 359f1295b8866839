"""The engines' Starlette app: the OpenAI routes, the model list, health, readiness and
metrics, behind the access guard.

The models load in a worker thread once the app runs (or are handed in, loaded already):
`/healthz` answers 200 from the start (liveness), `/readyz` 503 until they are loaded, and
the API's routes 503 (with Retry-After) meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

from openai.types import Model
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voice_fsm import __version__
from voice_fsm.access import AccessPolicy
from voice_fsm.client_tokens import ClientTokens
from voice_fsm.engines.api_errors import (
    ApiError,
    api_error_handler,
    method_not_allowed,
    not_found,
    unknown_model,
)
from voice_fsm.engines.chat import chat_completions
from voice_fsm.engines.guard import EnginesGuard
from voice_fsm.engines.loading import Engines, load_engines, loaded
from voice_fsm.engines.metrics import CONTENT_TYPE, EngineMetrics
from voice_fsm.engines.speech import speech
from voice_fsm.engines.transcriptions import transcriptions
from voice_fsm.logging_setup import get_logger
from voice_fsm.settings import Settings

MAX_WAITING = 16
"""Requests that may wait for one engine; more are refused (429) rather than queued."""


def create_engines_app(
    settings: Settings,
    engines: Engines | None = None,
    *,
    max_waiting: int = MAX_WAITING,
    load_failed: Callable[[BaseException], None] | None = None,
) -> Starlette:
    """The app; it loads the engines itself unless `engines` are given (and then leaves them
    open when it stops). `load_failed` is told when loading fails (the command exits)."""
    log = get_logger()
    metrics = EngineMetrics(max_waiting)
    created = int(time.time())

    async def load(app: Starlette) -> None:
        try:
            app.state.engines = await asyncio.to_thread(load_engines, settings)
        except Exception as err:
            app.state.failed = True
            log.error("engines.load_failed", error=f"{type(err).__name__}: {err}")
            if load_failed is not None:
                load_failed(err)
            return
        metrics.ready.set(1)
        log.info("engines.ready", models=[m.id for m in app.state.engines.models])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        metrics.watch_lanes()
        loading = None if engines is not None else asyncio.create_task(load(app))
        try:
            yield
        finally:
            metrics.stop_watching_lanes()
            if loading is not None:
                loading.cancel()
                with suppress(asyncio.CancelledError):
                    await loading
                if (own := app.state.engines) is not None:
                    await own.aclose()
            log.info("engines.stopped")

    async def models(request: Request) -> Response:
        served = loaded(request.app.state).models
        data = [_model(m.id, created).model_dump(mode="json") for m in served]
        return JSONResponse({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        for served in loaded(request.app.state).models:
            if served.answers_to(name):
                return JSONResponse(_model(served.id, created).model_dump(mode="json"))
        raise unknown_model(name)

    async def health(request: Request) -> Response:
        state = request.app.state
        status = "ok" if state.engines is not None else "failed" if state.failed else "loading"
        return JSONResponse({"status": status, "version": __version__})

    async def ready(request: Request) -> Response:
        state = request.app.state
        if state.stopping:
            return JSONResponse({"status": "stopping"}, status_code=503)
        if state.engines is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "models": [m.id for m in state.engines.models]})

    async def metrics_page(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    keys = settings.auth.secret_values()
    policy = AccessPolicy(settings, ClientTokens(keys, ttl_s=settings.auth.token_ttl_s))
    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
    if settings.metrics.enabled:  # as serve's; the queues and their bound work without it
        routes.append(Route("/metrics", metrics_page, methods=["GET"]))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EnginesGuard, policy=policy)],
        exception_handlers={
            ApiError: api_error_handler,
            404: not_found,
            405: method_not_allowed,
        },
        lifespan=lifespan,
    )
    app.state.engines = engines
    app.state.failed = False
    app.state.stopping = False
    app.state.metrics = metrics
    if engines is not None:
        metrics.ready.set(1)
    return app


def _model(model_id: str, created: int) -> Model:
    return Model(id=model_id, created=created, object="model", owned_by="voice-fsm")
