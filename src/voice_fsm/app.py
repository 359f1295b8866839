"""The Starlette application: the page, the WebSockets, client tokens and secrets, and the
health checks.

`/healthz` is liveness (the process answers): always 200, with ``"status": "degraded"`` and the
stages' problems when a provider failed the start-up check (`provider_check`); `/readyz` is
readiness: 503 once the server is draining or full, so a load balancer sends new sessions
elsewhere.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from voice_fsm import PROTOCOL_VERSION, __version__
from voice_fsm.access import SECRET_SESSION, AccessGuard, AccessPolicy
from voice_fsm.client_secrets import RealtimeSecrets
from voice_fsm.client_secrets_route import client_secrets_route
from voice_fsm.client_tokens import ClientTokens
from voice_fsm.connection import ClientConnection
from voice_fsm.endpoint import FrontEnd, FrontEndFactory, SessionEndpoint
from voice_fsm.log_redaction import redact_handshake_logs
from voice_fsm.logging_setup import get_logger
from voice_fsm.metrics import CONTENT_TYPE, Metrics
from voice_fsm.model_lifecycle import warn_scheduled_shutdowns
from voice_fsm.providers import Pipeline, build_pipeline, resolve_providers
from voice_fsm.realtime import realtime_front_end
from voice_fsm.session import Session
from voice_fsm.settings import Settings
from voice_fsm.tracing import tracer_observer
from voice_fsm.turn_history import TurnHistory

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def create_app(settings: Settings, pipeline: Pipeline | None = None) -> Starlette:
    """Build the app. Raises `ConfigError` when the settings cannot give a working pipeline."""
    log = get_logger()
    if pipeline is None:
        providers = resolve_providers(settings)
        warn_scheduled_shutdowns(settings, providers, log)
        pipeline = build_pipeline(settings)
    endpoint = SessionEndpoint(pipeline, settings)
    metrics = None
    if settings.metrics.enabled:
        served_by = {name: info["provider"] for name, info in pipeline.describe().items()}
        metrics = Metrics(lambda: endpoint.sessions, served_by)
        endpoint.observers.append(metrics)
    history = TurnHistory(settings.dashboard.turns)
    endpoint.observers.append(history)
    stages = pipeline.describe()
    tracer = tracer_observer(stages)  # None unless an OTLP endpoint is set and otel installed
    if tracer is not None:
        endpoint.observers.append(tracer)
    keys = settings.auth.secret_values()
    tokens = ClientTokens(keys, ttl_s=settings.auth.token_ttl_s)
    realtime_secrets = RealtimeSecrets(keys) if keys else None
    policy = AccessPolicy(settings, tokens, realtime_secrets)
    redact_handshake_logs()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Everything loaded so far (models, libraries) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise stall every session for
        # 100 ms and more under load.
        gc.collect()
        gc.freeze()
        await pipeline.start()
        log.info("server.started", version=__version__, **stages)
        if metrics is not None:
            metrics.watch_lanes()
        try:
            yield
        finally:
            if metrics is not None:
                metrics.stop_watching_lanes()
            await pipeline.aclose()
            if tracer is not None:
                await asyncio.to_thread(tracer.shutdown)  # the spans still queued go out
            log.info("server.stopped")

    realtime = with_secret_session(realtime_front_end(settings))

    async def realtime_session(websocket: WebSocket) -> None:
        """The Realtime API (`/v1/realtime`) over the same sessions as protocol v1."""
        await endpoint.handle(websocket, realtime)

    async def page(_request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def dashboard_page(_request: Request) -> Response:
        return FileResponse(WEB_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})

    async def dashboard(_request: Request) -> Response:
        return JSONResponse(
            history.snapshot(endpoint.sessions), headers={"Cache-Control": "no-store"}
        )

    async def metrics_page(_request: Request) -> Response:
        assert metrics is not None  # the route exists only with metrics
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def health(_request: Request) -> Response:
        # Liveness: 200 even when degraded (a rejected key, a provider that cannot be
        # reached), since restarting the process would not fix it; the body says what is wrong.
        problems = pipeline.problems()
        return JSONResponse(
            {
                "status": "degraded" if problems else "ok",
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "sessions": len(endpoint.sessions),
                **stages,
                **({"problems": problems} if problems else {}),
            }
        )

    async def ready(_request: Request) -> Response:
        slots = endpoint.slots
        if endpoint.draining:
            status = "draining"
        elif slots.in_use >= slots.max_sessions:
            status = "full"
        else:
            status = "ready"
        return JSONResponse(
            {"status": status, "sessions": len(endpoint.sessions)},
            status_code=200 if status == "ready" else 503,
        )

    async def client_token(_request: Request) -> Response:
        """Mint a client token; the API key was checked by the access guard."""
        if not policy.auth_required:
            return JSONResponse(
                {"error": "auth-off", "detail": "VOICE_FSM_AUTH__API_KEYS is not set"},
                status_code=404,
            )
        minted = tokens.mint()
        return JSONResponse(
            {"token": minted.token, "expires_at": minted.expires_at},
            headers={"Cache-Control": "no-store"},
        )

    async def page_token(_request: Request) -> Response:
        """A token for the page this server served: 204 when none is needed; refused (by the
        guard) unless the operator allows it with VOICE_FSM_AUTH__PAGE_TOKENS."""
        if not policy.auth_required:
            return Response(status_code=204)
        minted = tokens.mint()
        return JSONResponse(
            {"token": minted.token, "expires_at": minted.expires_at},
            headers={"Cache-Control": "no-store"},
        )

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/client", page),
            Route("/dashboard", dashboard_page),
            Route("/v1/dashboard", dashboard),
            Route("/healthz", health),
            Route("/readyz", ready),
            Route("/v1/client_tokens", client_token, methods=["POST"]),
            Route("/v1/page_token", page_token, methods=["POST"]),
            Route(
                "/v1/realtime/client_secrets",
                client_secrets_route(realtime_secrets, settings, pipeline.hands_free),
                methods=["POST"],
            ),
            WebSocketRoute("/ws", endpoint.handle),
            WebSocketRoute("/v1/realtime", realtime_session),
            Mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static"),
            *([Route("/metrics", metrics_page)] if metrics is not None else []),
        ],
        lifespan=lifespan,
        middleware=[
            *(
                # uvicorn's own handling of X-Forwarded-For and -Proto, for trusted proxies only
                [Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.server.trusted_proxies)]
                if settings.server.trusted_proxies
                else []
            ),
            Middleware(AccessGuard, policy=policy),
        ],
    )
    app.state.endpoint = endpoint
    app.state.pipeline = pipeline
    app.state.tracer = tracer
    app.state.tokens = tokens
    app.state.realtime_secrets = realtime_secrets
    app.state.metrics = metrics
    app.state.turn_history = history
    return app


def with_secret_session(make: FrontEndFactory) -> FrontEndFactory:
    """Realtime front ends that start with the session of the client secret a connection was
    let in with, if it carries one: applied as the client's own first `session.update` would
    be, before `session.created` (which shows it; a `session.updated` follows)."""

    def make_front_end(websocket: WebSocket, connection: ClientConnection) -> FrontEnd:
        front_end = make(websocket, connection)
        session = websocket.scope.get("state", {}).get(SECRET_SESSION)
        return front_end if session is None else _SecretSession(front_end, session)

    return make_front_end


class _SecretSession:
    def __init__(self, front_end: FrontEnd, session: str) -> None:
        self._front_end = front_end
        self._update = json.dumps({"type": "session.update", "session": json.loads(session)})
        self.send = front_end.send
        self.receive = front_end.receive

    async def attach(self, session: Session) -> None:
        await self._front_end.attach(session)
        await self._front_end.receive(session, self._update)
