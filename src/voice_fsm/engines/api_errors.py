"""Errors as the OpenAI API answers them: a status and ``{"error": {message, type, param,
code}}``, which the openai SDK turns into its typed exceptions (`BadRequestError`,
`NotFoundError`, ...). One exception class, raised anywhere in a request, answered once."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """A request the engines refuse or could not serve, with the answer it gets."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse(self) -> bytes:
        """The error as an event of a stream that has already begun (the SDK raises it)."""
        return sse_data(self.body())


def sse_data(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def missing(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unknown_model(name: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{name[:200]}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def engine_failed(stage: str, err: Exception) -> ApiError:
    return ApiError(
        500, f"The {stage} engine failed: {err}", kind=SERVER_ERROR, code="engine_error"
    )


async def api_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def not_found(_request: Request, _exc: Exception) -> Response:
    return ApiError(404, "Unknown request URL.", code="unknown_url").response()


async def method_not_allowed(request: Request, _exc: Exception) -> Response:
    message = f"Method {request.method} is not allowed for {request.url.path}."
    return ApiError(405, message, code="method_not_allowed").response()
