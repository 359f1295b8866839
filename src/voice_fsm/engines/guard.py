"""Who may use the engines: `serve`'s own access policy (`voice_fsm.access`) applied to the
OpenAI API, its refusals in the API's error shape.

With `VOICE_FSM_AUTH__API_KEYS` set, every route but the health checks (and `/metrics` when
`VOICE_FSM_METRICS__PUBLIC=true`) needs one of the keys as a Bearer token, as OpenAI's does.
Without keys (only on a loopback address, or with --insecure-no-auth) the Host header must name
this server, so a web page cannot reach the engines through DNS rebinding. The engines serve
no WebSocket: an upgrade (``/v1/realtime``) is refused with 404, which tells `serve`'s live
transcription to send completed recordings instead.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from voice_fsm.access import AccessPolicy, bearer, deny, log_refused
from voice_fsm.engines.api_errors import ApiError


class EnginesGuard:
    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            log_refused(scope, 404, "no-websocket")
            await deny(scope, receive, send, PlainTextResponse("Not Found", status_code=404))
            return
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        policy = self.policy
        headers = Headers(scope=scope)
        if policy.auth_required:
            if not policy.needs_credential(scope["path"]):
                return None
            key = bearer(headers)
            if key is None:
                log_refused(scope, 401, "credential-missing")
                return _unauthorized(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    code=None,
                )
            if not policy.key_valid(key):
                log_refused(scope, 401, "credential-invalid")
                return _unauthorized("Incorrect API key provided.", code="invalid_api_key")
            return None
        server = scope.get("server")
        if not policy.host_allowed(headers.get("host"), server[0] if server else None):
            log_refused(scope, 403, "host")
            return ApiError(
                403,
                "Host not allowed: set VOICE_FSM_SERVER__ALLOWED_HOSTS, or an API key.",
                code="host_not_allowed",
            ).response()
        return None


def _unauthorized(message: str, *, code: str | None) -> Response:
    error = ApiError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})
    return error.response()
