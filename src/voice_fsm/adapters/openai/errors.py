"""Translate the `openai` SDK's exceptions (and the transport's) into `ProviderError`.

The adapters wrap every SDK call and every stream they read in ``with translating(stage,
secrets):`` so the mapping is written once. `asyncio.CancelledError` is never caught: it is a
`BaseException`, and neither `translate` nor `translating` looks at those.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHeader,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from voice_fsm import provider_requests
from voice_fsm.errors import ErrorCode, ProviderError, Stage, redact

VENDOR = "OpenAI"
MAX_DETAIL_CHARS = 300

_STAGE_LABELS = {
    Stage.STT: "speech-to-text",
    Stage.LLM: "language model",
    Stage.TTS: "text-to-speech",
}

TRANSLATED: tuple[type[BaseException], ...] = (
    openai.OpenAIError,
    httpx.HTTPError,
    WebSocketException,
    OSError,  # refused or reset connections, DNS failures; TimeoutError is one too
)
"""What `translating` catches. Everything else (bugs, cancellation) passes through untouched."""


def translate(err: BaseException, stage: Stage, secrets: tuple[str, ...] = ()) -> ProviderError:
    """A `ProviderError` for `err` with a short message a person can act on, keys removed."""
    who = f"{VENDOR} {_STAGE_LABELS.get(stage, stage.value)}"
    code, message = _classify(err, who, secrets)
    # The failing request's id belongs in the turn's record as much as a successful one's.
    provider_requests.note(stage, _request_id(err))
    return ProviderError(code, redact(message, secrets), stage=stage)


def _request_id(err: BaseException) -> str | None:
    """The provider's id of the request that failed (OpenAI's ``x-request-id``), if it gave one."""
    if isinstance(err, openai.APIStatusError):
        return err.request_id
    if isinstance(err, InvalidStatus):
        return err.response.headers.get("x-request-id")
    return None


@contextmanager
def translating(stage: Stage, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Re-raise SDK, HTTP, WebSocket and socket errors as `ProviderError`, ``from`` the original."""
    try:
        yield
    except TRANSLATED as err:
        raise translate(err, stage, secrets) from err


def _classify(err: BaseException, who: str, secrets: tuple[str, ...]) -> tuple[ErrorCode, str]:
    detail = _describe(err, secrets)
    # Order matters: APITimeoutError is an APIConnectionError, httpx.TimeoutException is an
    # httpx.TransportError, and TimeoutError is an OSError.
    if isinstance(err, openai.APIStatusError):
        return _status_code(err.status_code), _status_message(err, who, secrets)
    if isinstance(err, openai.APITimeoutError):
        return ErrorCode.PROVIDER_TIMEOUT, f"{who} did not answer in time."
    if is_name_lookup_failure(err):
        # Not a passing outage: waiting will not make a misspelt or unknown host resolve.
        host = _host(err)
        return (
            ErrorCode.PROVIDER_ERROR,
            f"Could not find {who}: the host name{f' {host}' if host else ''} does not resolve. "
            "Check the server's base URL setting and its network.",
        )
    if isinstance(err, openai.APIConnectionError):
        # The SDK says only "Connection error."; the transport's exception says why.
        if err.__cause__ is not None:
            detail = _describe(err.__cause__, secrets)
        return ErrorCode.PROVIDER_UNAVAILABLE, f"Could not reach {who}: {detail}"
    if isinstance(err, openai.APIResponseValidationError):
        return (
            ErrorCode.PROVIDER_ERROR,
            f"{who} returned a response that could not be read (HTTP {err.status_code}).",
        )
    if isinstance(err, openai.APIError):
        # Raised by the SDK for an {"error": ...} payload in the middle of a stream.
        detail = _vendor_message(err.body, err.message, secrets)
        return ErrorCode.PROVIDER_ERROR, f"{who} failed: {detail}"
    if isinstance(err, openai.OpenAIError):
        return ErrorCode.PROVIDER_ERROR, f"{who} failed: {detail}"
    if isinstance(err, httpx.TimeoutException):
        return ErrorCode.PROVIDER_TIMEOUT, f"{who} did not answer in time."
    if isinstance(err, httpx.TransportError):
        # The SDK does not wrap errors raised while a stream is read, e.g. RemoteProtocolError
        # when the server cuts the connection mid-stream.
        return ErrorCode.PROVIDER_UNAVAILABLE, f"Connection to {who} failed: {detail}"
    if isinstance(err, httpx.HTTPError):
        return ErrorCode.PROVIDER_ERROR, f"{who} failed: {detail}"
    if isinstance(err, InvalidStatus):
        status = err.response.status_code
        refused = f"{who} refused the WebSocket connection with HTTP {status}"
        said = _handshake_body_message(err.response.body, secrets)
        return _status_code(status), f"{refused}: {said}" if said else f"{refused}."
    if isinstance(err, InvalidURI):
        return ErrorCode.PROVIDER_ERROR, f"{who} has an invalid WebSocket URL: {detail}"
    if isinstance(err, ConnectionClosed):
        return ErrorCode.PROVIDER_UNAVAILABLE, f"{who} closed the connection: {detail}"
    if isinstance(err, WebSocketException):
        return ErrorCode.PROVIDER_UNAVAILABLE, f"WebSocket to {who} failed: {detail}"
    if isinstance(err, TimeoutError):
        return ErrorCode.PROVIDER_TIMEOUT, f"{who} did not answer in time."
    if isinstance(err, OSError):
        return ErrorCode.PROVIDER_UNAVAILABLE, f"Could not reach {who}: {detail}"
    return ErrorCode.PROVIDER_ERROR, f"{who} failed: {detail}"


def is_name_lookup_failure(err: BaseException) -> bool:
    """Whether `err`, or an exception it was raised from, is a failed DNS lookup."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, socket.gaierror):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _host(err: BaseException) -> str | None:
    """The host `err`'s request went to, when it says."""
    request: object = None
    if isinstance(err, openai.APIConnectionError):
        request = err.request
    elif isinstance(err, httpx.RequestError):
        request = err._request  # its `request` property raises when there is none
    return request.url.host if isinstance(request, httpx.Request) else None


def realtime_error(
    stage: Stage,
    *,
    kind: str | None,
    code: str | None,
    message: str | None,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    """A `ProviderError` for a Realtime ``error`` event's (or a failed item's) ``error`` object.

    The SDK does not raise for these: they arrive as events on an open WebSocket.
    """
    who = f"{VENDOR} {_STAGE_LABELS.get(stage, stage.value)}"
    detail = _shorten(message or "no details given", secrets)
    if code:
        detail += f" ({code})"
    return ProviderError(_realtime_code(kind, code), f"{who} failed: {detail}", stage=stage)


def _realtime_code(kind: str | None, code: str | None) -> ErrorCode:
    if code == "invalid_api_key" or kind in ("authentication_error", "permission_error"):
        return ErrorCode.PROVIDER_AUTH
    if code in ("rate_limit_exceeded", "insufficient_quota") or kind in (
        "rate_limit_exceeded",
        "requests",
        "tokens",
    ):
        return ErrorCode.PROVIDER_RATE_LIMITED
    if kind == "server_error" or code == "session_expired":
        return ErrorCode.PROVIDER_UNAVAILABLE
    return ErrorCode.PROVIDER_ERROR


def _handshake_body_message(body: bytes | bytearray, secrets: tuple[str, ...]) -> str | None:
    """``error.message`` of the JSON body of a refused WebSocket handshake, if it has one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    text = error.get("message") if isinstance(error, dict) else None
    return _shorten(text, secrets) if isinstance(text, str) and text.strip() else None


def _status_code(status: int) -> ErrorCode:
    if status in (401, 403):
        return ErrorCode.PROVIDER_AUTH
    if status == 429:
        return ErrorCode.PROVIDER_RATE_LIMITED
    if status == 408:
        return ErrorCode.PROVIDER_TIMEOUT
    if status >= 500:
        return ErrorCode.PROVIDER_UNAVAILABLE
    return ErrorCode.PROVIDER_ERROR


def _status_message(err: openai.APIStatusError, who: str, secrets: tuple[str, ...]) -> str:
    detail = _vendor_message(err.body, err.response.reason_phrase, secrets)
    message = f"{who} returned {err.status_code}: {detail}"
    if err.request_id:
        message += f" (request id {err.request_id})"
    return message


def _vendor_message(body: object, fallback: str, secrets: tuple[str, ...]) -> str:
    """The vendor's own words: ``error.message`` from a JSON body, else the body's text."""
    text: Any = None
    if isinstance(body, dict):
        text = body.get("message")
    elif isinstance(body, str):
        text = body
    if not isinstance(text, str) or not text.strip():
        text = fallback or "no details given"
    return _shorten(text, secrets)


def _describe(err: BaseException, secrets: tuple[str, ...]) -> str:
    text = str(err).strip()
    return _shorten(text, secrets) if text else type(err).__name__


def _shorten(text: str, secrets: tuple[str, ...]) -> str:
    """One line of at most `MAX_DETAIL_CHARS`, redacted before it is cut so no key is split."""
    text = redact(" ".join(text.split()), secrets)
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


# ------------------------------------ a compatible server without Realtime transcription
# Asked once per process with VOICE_FSM_STT__LIVE=auto at a base URL (`realtime_stt`). No such
# endpoint: the upgrade refused with 404 (OpenAI's shape, llama.cpp's server), 403 (Starlette
# and FastAPI for a WebSocket to no route: vLLM, speaches), 400, 405 or 501, or answered with no
# upgrade; or the transcription session refused by an error event, or closed. Not an answer
# (asked again next turn): a timeout, 408, 429, another 5xx, a host that is down (the upload
# fails as well), a rate limit or server error event.

PASSING_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
PASSING_CODES = frozenset({ErrorCode.PROVIDER_RATE_LIMITED, ErrorCode.PROVIDER_UNAVAILABLE})


def lacks_realtime(err: ProviderError) -> str | None:
    """Why `err`, raised opening a Realtime connection, shows the server has no Realtime
    transcription; None when it does not tell."""
    cause = err.__cause__
    if isinstance(cause, InvalidStatus):
        status = cause.response.status_code
        if status in PASSING_STATUSES:
            return None
        return f"the WebSocket upgrade was answered with HTTP {status}"
    if isinstance(cause, InvalidMessage | InvalidHeader):
        return f"it did not answer the WebSocket upgrade ({err.message})"
    if isinstance(cause, ConnectionClosed):
        return "it closed the connection instead of opening a transcription session"
    return None


def no_realtime(base_url: str, reason: str) -> ProviderError:
    """The error that ends live transcription at `base_url` for the process."""
    url = httpx.URL(base_url)
    server = str(url.copy_with(username=None, password=None)) if url.userinfo else base_url
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        f"The OpenAI-compatible server at {server} has no Realtime transcription endpoint: "
        f"{reason}. Speech-to-text sends each completed recording instead from now on "
        "(VOICE_FSM_STT__LIVE=false skips this check).",
        stage=Stage.STT,
    )
