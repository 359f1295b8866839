"""Who may use the server: the Host and Origin checks and the credentials, as ASGI middleware.

Everything is decided before a WebSocket is accepted, so a refused client gets a plain HTTP
answer (403 or 401) and no session is ever made for it:

- Host must name this server (loopback names, the address it was reached on, or
  `VOICE_FSM_SERVER__ALLOWED_HOSTS`), against DNS rebinding;
- a WebSocket's Origin, when a browser sends one, must be the server's own origin, a loopback
  origin or one of `VOICE_FSM_SERVER__ALLOWED_ORIGINS`: no other web page may drive it;
- with `VOICE_FSM_AUTH__API_KEYS` set, every route but the health checks needs a key
  (`Authorization: Bearer`) or, for `/ws`, a client token (`?token=`); `/metrics` too, unless
  `VOICE_FSM_METRICS__PUBLIC=true`. `/v1/realtime` also takes a Realtime client secret
  (`client_secrets.py`), as a Bearer or in the `openai-insecure-api-key.` subprotocol, which
  never takes an API key: a key a browser holds is a leaked key.

On `/v1/realtime` the `realtime` subprotocol, when offered, is the one the connection is
accepted with (a browser fails a connection whose subprotocols the server does not answer).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from voice_fsm.client_secrets import (
    REALTIME_SUBPROTOCOL,
    SECRET_PREFIX,
    RealtimeSecrets,
    secret_in_subprotocols,
)
from voice_fsm.client_tokens import ClientTokens
from voice_fsm.logging_setup import get_logger
from voice_fsm.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
PAGE_PATHS = frozenset({"/", "/client", "/v1/page_token"})
METRICS_PATH = "/metrics"
REALTIME_PATH = "/v1/realtime"
TRANSPORT_KEY = "voice_fsm.transport"
"""Where the scope keeps the server's transport for the connection, when there is one."""
SECRET_SESSION = "realtime_session"
"""Where the scope's state keeps the session a Realtime client secret carries (JSON text)."""

Credential = Literal["api-key", "token", "client-secret"]


def host_name(host: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`; lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_loopback(name: str) -> bool:
    """`localhost` (and `*.localhost`) or a loopback address; `[::1]` as well as `::1`. A name
    that merely starts like one (`127.example.com`) is not."""
    name = name.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _matches(name: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class AccessPolicy:
    """The checks themselves, without ASGI, so they are easy to test one by one."""

    def __init__(
        self,
        settings: Settings,
        tokens: ClientTokens,
        realtime_secrets: RealtimeSecrets | None = None,
    ) -> None:
        self.allowed_hosts = [h.lower() for h in settings.server.allowed_hosts]
        self.allowed_origins = [o.lower().rstrip("/") for o in settings.server.allowed_origins]
        bound = settings.host.lower()
        self.bound_host = None if bound in ("0.0.0.0", "::", "") else host_name(bound)
        self.keys = [key.encode() for key in settings.auth.secret_values()]
        self.page_tokens = settings.auth.page_tokens
        self.metrics_public = settings.metrics.public
        self.tokens = tokens
        self.realtime_secrets = realtime_secrets

    @property
    def auth_required(self) -> bool:
        return bool(self.keys)

    def host_allowed(self, host: str | None, local_address: str | None) -> bool:
        if not host:
            return False
        name = host_name(host)
        return (
            is_loopback(name)
            or name == self.bound_host
            or (local_address is not None and name == host_name(local_address))
            or _matches(name, self.allowed_hosts)
        )

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null", file:, extensions
        if is_loopback(parts.hostname):
            return True
        # The server's own origin: the page it served talks back to the host it came from.
        return host is not None and parts.netloc == host.strip().lower()

    def key_valid(self, presented: str) -> bool:
        candidate = presented.encode()
        valid = False
        for key in self.keys:  # constant time for each, and every key tried
            valid |= hmac.compare_digest(candidate, key)
        return valid

    def needs_credential(self, path: str) -> bool:
        if not self.auth_required or path in HEALTH_PATHS:
            return False
        if path == METRICS_PATH and self.metrics_public:
            return False
        page = path in PAGE_PATHS or path.startswith("/static/")
        return not (self.page_tokens and page)


def bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credential = value.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def query_token(scope: Scope) -> str | None:
    query: str = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query):
        if name == "token":
            return value
    return None


def take_query_token(scope: Scope) -> str | None:
    """The `token` query parameter, removed from the scope: uvicorn writes the path and query
    of every upgrade it accepts or refuses to its log, which must never hold a credential."""
    token = query_token(scope)
    if token is not None:
        query: str = scope.get("query_string", b"").decode("latin-1")
        kept = [pair for pair in parse_qsl(query, keep_blank_values=True) if pair[0] != "token"]
        scope["query_string"] = urlencode(kept).encode("latin-1")
    return token


log = get_logger()


def log_refused(scope: Scope, status: int, reason: str) -> None:
    """One ``access.refused`` line: the path only, since the query string may hold a token."""
    client = scope.get("client")
    where = {"path": scope["path"], "kind": scope["type"], "client": client[0] if client else None}
    log.info("access.refused", status=status, reason=reason, **where)


class AccessGuard:
    """ASGI middleware applying `AccessPolicy` to every HTTP request and WebSocket."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = take_query_token(scope) if scope["type"] == "websocket" else None
        refusal = self.refusal(scope, token)
        if refusal is not None:
            await deny(scope, receive, send, refusal)
            return
        if scope["type"] == "websocket":
            # uvicorn's protocol object is the `send` it hands the app: its transport is the
            # only way to drop a client that stopped reading (close() would wait for it).
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[TRANSPORT_KEY] = transport
            send = _with_subprotocol(scope, send)
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope, token: str | None = None) -> Response | None:
        """Why `scope` may not go on, as the answer to give; `token` is the client token of a
        WebSocket's query, if any."""
        policy = self.policy
        headers = Headers(scope=scope)
        server = scope.get("server")
        local = server[0] if server else None
        path = scope["path"]
        if not policy.host_allowed(headers.get("host"), local):
            log_refused(scope, 403, "host")
            return JSONResponse({"error": "host-not-allowed"}, status_code=403)
        origin = headers.get("origin")
        checks_origin = scope["type"] == "websocket" or path == "/v1/page_token"
        host = headers.get("host")
        if checks_origin and origin is not None and not policy.origin_allowed(origin, host):
            log_refused(scope, 403, "origin")
            return JSONResponse({"error": "origin-not-allowed"}, status_code=403)
        if path == "/v1/page_token" and origin is None and policy.page_tokens:
            log_refused(scope, 403, "origin")
            return JSONResponse({"error": "origin-required"}, status_code=403)
        if not policy.needs_credential(path):
            return None
        realtime = scope["type"] == "websocket" and path == REALTIME_PATH
        in_protocol = secret_in_subprotocols(scope.get("subprotocols", [])) if realtime else None
        if in_protocol is not None and policy.key_valid(in_protocol):
            return self._unauthorized(scope, "api-key-in-subprotocol")
        state = scope.setdefault("state", {})
        key = bearer(headers)
        if key is not None and policy.key_valid(key):
            state["credential"] = "api-key"
            return None
        secret = key if key is not None else in_protocol
        if realtime and secret is not None and self._secret_admits(state, secret):
            return None
        only_token = key is None and in_protocol is None
        if only_token and token is not None and policy.tokens.redeem(token):
            state["credential"] = "token"
            return None
        missing = key is None and token is None and in_protocol is None
        return self._unauthorized(scope, "missing" if missing else "invalid")

    def _secret_admits(self, state: dict[str, object], secret: str) -> bool:
        """Whether `secret` is a valid Realtime client secret; its session goes in `state`."""
        secrets = self.policy.realtime_secrets
        grant = secrets.check(secret) if secrets and secret.startswith(SECRET_PREFIX) else None
        if grant is None:
            return False
        state["credential"] = "client-secret"
        if grant.session is not None:
            state[SECRET_SESSION] = grant.session
        return True

    def _unauthorized(self, scope: Scope, reason: str) -> Response:
        log_refused(scope, 401, f"credential-{reason}")
        return JSONResponse(
            {"error": "unauthorized", "detail": f"credential {reason.replace('-', ' ')}"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="voice-fsm"'},
        )


def _with_subprotocol(scope: Scope, send: Send) -> Send:
    """`send`, answering a `/v1/realtime` upgrade with the `realtime` subprotocol when the
    client offered it and the app accepts without choosing one."""
    if scope["path"] != REALTIME_PATH or REALTIME_SUBPROTOCOL not in scope.get("subprotocols", []):
        return send

    async def choosing(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": REALTIME_SUBPROTOCOL}
        await send(message)

    return choosing


async def deny(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Answer with `response`: as is for HTTP, as the upgrade's answer for a WebSocket (or a
    plain 403 from a server without the denial-response extension)."""
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008)
