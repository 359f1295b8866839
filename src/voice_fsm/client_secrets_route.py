"""`POST /v1/realtime/client_secrets`: OpenAI's endpoint for minting Realtime client secrets,
as the `openai` SDK's `client.realtime.client_secrets.create` calls it and parses its answer.

The body is OpenAI's: `expires_after` (`anchor: "created_at"`, `seconds` from 10 to 7200, 600
when left out) and an optional `session`, checked as a `session.update` would be on the same
server, so a session that could not be applied is refused here (400, in OpenAI's error shape)
rather than when the secret is used. The answer is `{value, expires_at, session}`, the session
as `session.created` will show it. What a secret is and how it is checked: `client_secrets.py`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from voice_fsm.client_secrets import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    MIN_TTL_S,
    RealtimeSecrets,
    SecretsFull,
)
from voice_fsm.logging_setup import get_logger
from voice_fsm.realtime import config as session_config
from voice_fsm.realtime.front_end import DEFAULT_MODEL
from voice_fsm.realtime.wire import EventError, parse
from voice_fsm.settings import Settings

MAX_BODY_BYTES = 256 * 1024
"""The largest request body (a session's instructions and tools)."""

log = get_logger()


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(default=DEFAULT_TTL_S, ge=MIN_TTL_S, le=MAX_TTL_S, strict=True)


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_after: ExpiresAfter | None = None
    session: dict[str, Any] | None = None


def openai_error(
    status: int, message: str, *, code: str | None, param: str | None = None
) -> JSONResponse:
    """An error in the shape OpenAI's HTTP API answers with (the SDK reads `error.message`)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


class InvalidRequest(Exception):
    def __init__(self, message: str, *, code: str | None, param: str | None = None) -> None:
        super().__init__(message)
        self.response = openai_error(400, message, code=code, param=param)


async def _body(request: Request) -> CreateRequest:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidRequest(
                f"The request body may be at most {MAX_BODY_BYTES} bytes.", code="body_too_large"
            )
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    try:
        return CreateRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"Unknown parameter: '{where}'.", code="unknown_parameter", param=where
            ) from None
        if where == "expires_after.seconds":
            message = (
                f"Invalid 'expires_after.seconds': expected an integer from {MIN_TTL_S} "
                f"to {MAX_TTL_S}."
            )
        else:
            message = f"Invalid value for '{where}': {first['msg']}."
        raise InvalidRequest(message[:500], code="invalid_value", param=where) from None


def _effective_session(
    settings: Settings, hands_free: bool, session: dict[str, Any] | None
) -> dict[str, Any]:
    """The session a secret's connections start with, as `session.created` will show it;
    raises `InvalidRequest` for what a `session.update` would be refused for."""
    model = session.get("model") if session else None
    config = session_config.RealtimeConfig(
        model=model[:100] if isinstance(model, str) and model else DEFAULT_MODEL,
        instructions=settings.llm.instructions,
        voice=settings.tts.voice,
    )
    if session is not None:
        try:
            update = parse(json.dumps({"type": "session.update", "session": session}))
            config, _ = session_config.apply(config, getattr(update, "session", None), None)
        except EventError as err:
            raise InvalidRequest(
                err.error.message or "Invalid session.",
                code=err.error.code,
                param=err.error.param,
            ) from None
        if config.turn_detection is not None and not hands_free:
            raise InvalidRequest(
                "Turn detection needs voice activity detection, which this server does not "
                "have (VOICE_FSM_VAD__PROVIDER); leave it off and commit the audio instead.",
                code="turn_detection_unavailable",
                param="session.audio.input.turn_detection",
            )
    data: dict[str, Any] = config.session().model_dump(mode="json", exclude_none=True)
    data["audio"]["input"].setdefault("turn_detection", None)
    return data


def client_secrets_route(
    store: RealtimeSecrets | None, settings: Settings, hands_free: bool
) -> Callable[[Request], Awaitable[Response]]:
    """The route's handler; `store` is None when the server has no API keys (nothing to sign
    with, and nothing a secret would unlock). The API key was checked by the access guard."""

    async def create(request: Request) -> Response:
        if store is None:
            return openai_error(
                404,
                "Client secrets need API keys on this server (VOICE_FSM_AUTH__API_KEYS).",
                code="auth_off",
            )
        try:
            body = await _body(request)
            session = _effective_session(settings, hands_free, body.session)
        except InvalidRequest as err:
            return err.response
        except ClientDisconnect:
            return Response(status_code=400)
        ttl_s = body.expires_after.seconds if body.expires_after else DEFAULT_TTL_S
        kept = None if body.session is None else json.dumps(body.session, separators=(",", ":"))
        try:
            minted = store.mint(ttl_s, kept)
        except SecretsFull:
            return openai_error(
                503,
                "Too many unexpired client secrets carry a session; retry later, or mint "
                "shorter-lived ones.",
                code="client_secrets_full",
            )
        log.info("client_secret.minted", expires_at=minted.expires_at, session=kept is not None)
        return JSONResponse(
            {"value": minted.value, "expires_at": minted.expires_at, "session": session},
            headers={"Cache-Control": "no-store"},
        )

    return create
