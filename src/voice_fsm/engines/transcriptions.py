"""``POST /v1/audio/transcriptions``: a multipart upload (``file``, ``model``, optional
``language``, ``prompt``, ``temperature``, ``response_format`` json or text, ``stream``)
transcribed by the embedded Whisper.

With ``stream=true`` the answer is server-sent events as OpenAI sends them: one
``transcript.text.delta`` per decoded segment, then ``transcript.text.done`` with the whole
text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
)
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from voice_fsm.adapters.base import TranscriptDelta, TranscriptEvent
from voice_fsm.engines.api_errors import ApiError, invalid, missing, sse_data
from voice_fsm.engines.audio_files import decode_upload
from voice_fsm.engines.bodies import form_text, read_form
from voice_fsm.engines.loading import Engines, loaded
from voice_fsm.engines.streaming import collect, open_stream, server_sent

RESPONSE_FORMATS = ("json", "text")


async def transcriptions(request: Request) -> Response:
    engines = loaded(request.app.state)
    # Admitted before the upload is read: each waiting request holds its file and the audio
    # decoded from it (tens of megabytes), so the bound on waiting requests bounds them too.
    admission = request.app.state.metrics.admit("stt")
    try:
        upload = await _read_upload(request, engines)
    except BaseException as err:
        gone = isinstance(err, asyncio.CancelledError)
        admission.finish(
            "cancelled" if gone else "invalid" if isinstance(err, ApiError) else "error"
        )
        raise
    events = engines.stt.transcribe(upload.pcm, language=upload.language)
    opened = await open_stream(request, admission, events, "speech-to-text")
    if upload.stream:
        return StreamingResponse(
            server_sent(opened, _event, lambda: ()), media_type="text/event-stream"
        )
    text = "".join(_final(await collect(opened)))
    if upload.response_format == "text":
        return PlainTextResponse(text)
    return JSONResponse(Transcription(text=text).model_dump(mode="json", exclude_unset=True))


@dataclass(frozen=True, slots=True)
class Upload:
    pcm: bytes
    language: str | None
    response_format: str
    stream: bool


async def _read_upload(request: Request, engines: Engines) -> Upload:
    """The request's form, checked, and its file decoded. Raises the API's 4xx."""
    form = await read_form(request)
    try:
        file = form.get("file")
        if file is None:
            raise missing("file")
        if not isinstance(file, UploadFile):
            raise invalid("file", "'file' must be a file upload.")
        model = form_text(form, "model")
        if not model:
            raise missing("model")
        engines.check_model("stt", model)
        response_format = form_text(form, "response_format", "json") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise invalid(
                "response_format",
                f"response_format '{response_format[:32]}' is not supported: use json or text.",
                code="unsupported_value",
            )
        stream = _flag(form_text(form, "stream", "false"), "stream")
        language = form_text(form, "language") or None
        if language is not None and not (2 <= len(language) <= 16 and language.isascii()):
            raise invalid("language", "'language' must be an ISO-639-1 code such as 'en'.")
        data = await file.read()
    finally:
        await form.close()
    pcm = await asyncio.to_thread(decode_upload, data)
    return Upload(pcm, language, response_format, stream)


def _event(event: TranscriptEvent) -> Iterable[bytes]:
    if isinstance(event, TranscriptDelta):
        delta = TranscriptionTextDeltaEvent(type="transcript.text.delta", delta=event.text)
        yield sse_data(delta.model_dump(mode="json", exclude_unset=True))
    else:
        done = TranscriptionTextDoneEvent(type="transcript.text.done", text=event.text)
        yield sse_data(done.model_dump(mode="json", exclude_unset=True))


def _final(events: list[TranscriptEvent]) -> Iterable[str]:
    """The done event's text (the adapters always end with one)."""
    for event in events:
        if not isinstance(event, TranscriptDelta):
            yield event.text


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise invalid(name, f"'{name}' must be true or false.")
