"""The Starlette application: the page, the WebSocket and a health check."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from voice_fsm import PROTOCOL_VERSION, __version__
from voice_fsm.endpoint import SessionEndpoint
from voice_fsm.logging_setup import get_logger
from voice_fsm.model_lifecycle import warn_scheduled_shutdowns
from voice_fsm.providers import Pipeline, build_pipeline, resolve_providers
from voice_fsm.settings import Settings

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def create_app(settings: Settings, pipeline: Pipeline | None = None) -> Starlette:
    """Build the app. Raises `ConfigError` when the settings cannot give a working pipeline."""
    log = get_logger()
    if pipeline is None:
        providers = resolve_providers(settings)
        warn_scheduled_shutdowns(settings, providers, log)
        pipeline = build_pipeline(settings)
    endpoint = SessionEndpoint(pipeline, settings)
    stages = pipeline.describe()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Everything loaded so far (models, libraries) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise stall every session for
        # 100 ms and more under load.
        gc.collect()
        gc.freeze()
        await pipeline.start()
        log.info("server.started", version=__version__, **stages)
        try:
            yield
        finally:
            await pipeline.aclose()
            log.info("server.stopped")

    async def page(_request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(_request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "sessions": len(endpoint.sessions),
                **stages,
            }
        )

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/client", page),
            Route("/healthz", health),
            WebSocketRoute("/ws", endpoint.handle),
            Mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.endpoint = endpoint
    app.state.pipeline = pipeline
    return app
