"""translate() and translating(): vendor and transport exceptions to ProviderError."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
import respx
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.frames import Close
from websockets.http11 import Response as WsResponse

from voice_fsm.adapters.openai.errors import translate, translating
from voice_fsm.errors import ErrorCode, ProviderError, Stage

from support.openai_wire import BASE_URL as OPENAI_URL
from support.openai_wire import HTTP_ADAPTERS, KEY, REQUEST_ID, HttpAdapter, drain, error_response

URL = "https://api.openai.com/v1/chat/completions"
REQUEST = httpx.Request("POST", URL)
SDK = openai.AsyncOpenAI(api_key="sk-test", base_url="https://api.openai.com/v1")


def status_error(
    status: int,
    body: Any = None,
    *,
    request_id: str | None = "req_abc",
    content: bytes | None = None,
) -> openai.APIStatusError:
    """The exception the SDK raises for `status`, built by the SDK from a real response."""
    headers = {"x-request-id": request_id} if request_id else {}
    if content is None and body is not None:
        response = httpx.Response(status, json=body, headers=headers, request=REQUEST)
    else:
        response = httpx.Response(status, content=content or b"", headers=headers, request=REQUEST)
    return SDK._make_status_error_from_response(response)


def vendor_body(message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.PROVIDER_ERROR),
        (401, ErrorCode.PROVIDER_AUTH),
        (403, ErrorCode.PROVIDER_AUTH),
        (404, ErrorCode.PROVIDER_ERROR),
        (408, ErrorCode.PROVIDER_TIMEOUT),
        (409, ErrorCode.PROVIDER_ERROR),
        (422, ErrorCode.PROVIDER_ERROR),
        (429, ErrorCode.PROVIDER_RATE_LIMITED),
        (500, ErrorCode.PROVIDER_UNAVAILABLE),
        (502, ErrorCode.PROVIDER_UNAVAILABLE),
        (503, ErrorCode.PROVIDER_UNAVAILABLE),
    ],
)
def test_status_codes(status: int, code: ErrorCode) -> None:
    err = translate(status_error(status, vendor_body("Something.")), Stage.LLM)
    assert err.code is code
    assert err.stage is Stage.LLM
    assert (
        err.message == f"OpenAI language model returned {status}: Something. (request id req_abc)"
    )


def test_sdk_classes_map_as_documented() -> None:
    # Guard against the SDK renaming or re-parenting its classes under us.
    assert isinstance(status_error(401, vendor_body("x")), openai.AuthenticationError)
    assert isinstance(status_error(403, vendor_body("x")), openai.PermissionDeniedError)
    assert isinstance(status_error(429, vendor_body("x")), openai.RateLimitError)
    assert isinstance(status_error(500, vendor_body("x")), openai.InternalServerError)
    assert issubclass(openai.APITimeoutError, openai.APIConnectionError)


def test_key_in_the_vendor_message_is_redacted() -> None:
    body = vendor_body(
        "Incorrect API key provided: sk-abc123**************************wxyz. You can find "
        "your API key at https://platform.openai.com/account/api-keys."
    )
    err = translate(status_error(401, body, request_id="req_1"), Stage.STT)
    assert err.message == (
        "OpenAI speech-to-text returned 401: Incorrect API key provided: [redacted]. You can "
        "find your API key at https://platform.openai.com/account/api-keys. (request id req_1)"
    )
    assert err.code is ErrorCode.PROVIDER_AUTH
    assert not err.retryable


def test_configured_secret_that_does_not_look_like_a_key_is_redacted() -> None:
    body = vendor_body("Invalid token 'local-token-42' for this server.")
    err = translate(status_error(401, body), Stage.TTS, secrets=("local-token-42",))
    assert "local-token-42" not in err.message
    assert "Invalid token '[redacted]' for this server." in err.message


def test_secret_is_redacted_before_a_long_message_is_cut() -> None:
    secret = "my-very-private-value"
    body = vendor_body("x" * 290 + secret + "y" * 50)
    err = translate(status_error(400, body), Stage.LLM, secrets=(secret,))
    assert "my-very" not in err.message
    assert len(err.message) < 400


def test_missing_request_id_and_body_fall_back_to_the_reason_phrase() -> None:
    err = translate(status_error(502, request_id=None), Stage.LLM)
    assert err.message == "OpenAI language model returned 502: Bad Gateway"
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE


def test_non_json_error_body_is_quoted_on_one_line() -> None:
    html = b"<html>\n<head><title>502 Bad Gateway</title></head>\n</html>"
    err = translate(status_error(502, content=html), Stage.TTS)
    assert err.message == (
        "OpenAI text-to-speech returned 502: <html> <head><title>502 Bad Gateway</title></head> "
        "</html> (request id req_abc)"
    )


def test_timeout_and_connection_errors() -> None:
    timeout = translate(openai.APITimeoutError(REQUEST), Stage.LLM)
    assert timeout.code is ErrorCode.PROVIDER_TIMEOUT
    assert timeout.retryable
    assert timeout.message == "OpenAI language model did not answer in time."

    connection = openai.APIConnectionError(request=REQUEST)
    connection.__cause__ = httpx.ConnectError("[Errno -2] Name or service not known")
    err = translate(connection, Stage.LLM)
    assert err.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert err.message == (
        "Could not reach OpenAI language model: [Errno -2] Name or service not known"
    )
    bare = translate(openai.APIConnectionError(request=REQUEST), Stage.LLM)
    assert bare.message == "Could not reach OpenAI language model: Connection error."


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("timed out"), ErrorCode.PROVIDER_TIMEOUT),
        (httpx.RemoteProtocolError("peer closed connection"), ErrorCode.PROVIDER_UNAVAILABLE),
        (httpx.ReadError("connection reset"), ErrorCode.PROVIDER_UNAVAILABLE),
        (httpx.DecodingError("bad gzip"), ErrorCode.PROVIDER_ERROR),
        (ConnectionRefusedError(111, "Connection refused"), ErrorCode.PROVIDER_UNAVAILABLE),
        (TimeoutError(), ErrorCode.PROVIDER_TIMEOUT),
        (InvalidStatus(WsResponse(401, "Unauthorized", Headers())), ErrorCode.PROVIDER_AUTH),
        (InvalidStatus(WsResponse(503, "Unavailable", Headers())), ErrorCode.PROVIDER_UNAVAILABLE),
        (
            ConnectionClosedError(Close(1011, "internal error"), None),
            ErrorCode.PROVIDER_UNAVAILABLE,
        ),
        (InvalidURI("ftp://x", "scheme isn't ws or wss"), ErrorCode.PROVIDER_ERROR),
        (ValueError("surprise"), ErrorCode.PROVIDER_ERROR),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_transport_and_websocket_errors(exc: BaseException, code: ErrorCode) -> None:
    err = translate(exc, Stage.STT)
    assert err.code is code
    assert err.stage is Stage.STT
    assert err.message.startswith(
        ("OpenAI speech-to-text", "Could not reach", "Connection to", "WebSocket to")
    )


def test_refused_websocket_handshake_message() -> None:
    err = translate(InvalidStatus(WsResponse(403, "Forbidden", Headers())), Stage.STT)
    assert err.message == "OpenAI speech-to-text refused the WebSocket connection with HTTP 403."


def test_error_payload_mid_stream() -> None:
    body = {
        "message": "The server had an error.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    err = translate(openai.APIError("The server had an error.", REQUEST, body=body), Stage.LLM)
    assert err.code is ErrorCode.PROVIDER_ERROR
    assert not err.retryable
    assert err.message == "OpenAI language model failed: The server had an error."


def test_translating_raises_provider_error_from_the_original() -> None:
    original = status_error(429, vendor_body("Slow down.", "requests"))
    with pytest.raises(ProviderError) as caught, translating(Stage.TTS, ("sk-unused",)):
        raise original
    assert caught.value.__cause__ is original
    assert caught.value.code is ErrorCode.PROVIDER_RATE_LIMITED
    assert caught.value.stage is Stage.TTS


def test_translating_leaves_other_exceptions_alone() -> None:
    already = ProviderError(ErrorCode.PROVIDER_ERROR, "done before", stage=Stage.LLM)
    with pytest.raises(ProviderError) as caught, translating(Stage.TTS):
        raise already
    assert caught.value is already

    with pytest.raises(KeyError), translating(Stage.TTS):
        raise KeyError("a bug, not a provider failure")


async def test_translating_never_touches_cancellation() -> None:
    async def cancelled_inside() -> None:
        with translating(Stage.LLM):
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled_inside())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


# ---------------------------------------------------------------- through each HTTP adapter


ERROR_STATUSES = [
    (
        error_response(
            401,
            f"Incorrect API key provided: {KEY}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        ErrorCode.PROVIDER_AUTH,
        False,
    ),
    (
        error_response(
            429,
            "Rate limit reached for requests per min (RPM): Limit 500.",
            "requests",
            "rate_limit_exceeded",
        ),
        ErrorCode.PROVIDER_RATE_LIMITED,
        True,
    ),
    (
        error_response(
            500, "The server had an error while processing your request.", "server_error", None
        ),
        ErrorCode.PROVIDER_UNAVAILABLE,
        True,
    ),
    (
        error_response(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        ),
        ErrorCode.PROVIDER_ERROR,
        False,
    ),
    (
        error_response(
            404,
            "The model `tts-2` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        ErrorCode.PROVIDER_ERROR,
        False,
    ),
]


@pytest.mark.parametrize("adapter", HTTP_ADAPTERS, ids=lambda a: a.stage.value)
@pytest.mark.parametrize(
    ("response", "code", "retryable"), ERROR_STATUSES, ids=["401", "429", "500", "400", "404"]
)
async def test_each_http_adapter_turns_error_statuses_into_typed_errors(
    adapter: HttpAdapter, response: httpx.Response, code: ErrorCode, retryable: bool
) -> None:
    made = adapter.build()
    with respx.mock(base_url=OPENAI_URL) as router:
        route = router.post(adapter.path).mock(return_value=response)
        with pytest.raises(ProviderError) as caught:
            await drain(adapter.open(made), [])
    await made.aclose()

    err = caught.value
    assert route.call_count == 1
    assert (err.code, err.stage, err.retryable) == (code, adapter.stage, retryable)
    vendor_message = response.json()["error"]["message"].replace(KEY, "[redacted]")
    assert err.message == (
        f"OpenAI {adapter.name} returned {response.status_code}: {vendor_message} "
        f"(request id {REQUEST_ID})"
    )
    assert KEY not in err.message


@pytest.mark.parametrize("adapter", HTTP_ADAPTERS, ids=lambda a: a.stage.value)
async def test_each_http_adapter_reports_a_provider_out_of_reach(adapter: HttpAdapter) -> None:
    made = adapter.build()
    with respx.mock(base_url=OPENAI_URL) as router:
        router.post(adapter.path).mock(side_effect=httpx.ConnectError("Connection refused"))
        with pytest.raises(ProviderError) as caught:
            await drain(adapter.open(made), [])
    await made.aclose()

    err = caught.value
    assert (err.code, err.stage, err.retryable) == (
        ErrorCode.PROVIDER_UNAVAILABLE,
        adapter.stage,
        True,
    )
    assert err.message == f"Could not reach OpenAI {adapter.name}: Connection refused"
    assert isinstance(err.__cause__, Exception)
