"""Request bodies, read with a bound and checked: JSON into a pydantic model, multipart forms,
each failure the API's 400 (or 413) with the parameter it concerns."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import Message

from voice_fsm.engines.api_errors import ApiError, invalid, missing

M = TypeVar("M", bound=BaseModel)

MAX_JSON_BYTES = 4 * 1024 * 1024
"""A chat request: far above what the model's context holds."""
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""An audio upload, as OpenAI's transcription endpoint limits it."""
MAX_FORM_FIELDS = 32


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Maximum content size limit ({limit}) exceeded.",
        code="request_too_large",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


async def read_json(request: Request, model: type[M]) -> M:
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise _first_problem(err) from None


async def read_form(request: Request) -> FormData:
    """A multipart (or urlencoded) form, its file parts spooled to disk past 1 MiB."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise invalid("file", "The request must be multipart/form-data with a file.")
    body = await read_body(request, MAX_UPLOAD_BYTES)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=64 * 1024
        )
    except Exception as err:  # starlette's MultiPartException, python-multipart's errors
        raise invalid("file", f"Could not parse the multipart form: {err}") from None


def form_text(form: FormData, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid(name, f"'{name}' must be a text field.")
    return value


def _first_problem(err: ValidationError) -> ApiError:
    problem = err.errors(include_url=False)[0]
    kind = problem["type"]
    if kind in ("json_invalid", "json_type"):
        return ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            code="invalid_json",
        )
    param = _param(problem["loc"])
    if kind == "missing" and param is not None:
        return missing(param)
    where = f"'{param}'" if param else "the body"
    return invalid(param or "body", f"Invalid value for {where}: {problem['msg']}.")


def _param(loc: tuple[int | str, ...]) -> str | None:
    """`("messages", 0, "role")` as OpenAI names it: `messages[0].role`."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or None
