"""A fake OpenAI-compatible HTTP server for tests, demos and benchmarks.

It speaks OpenAI's wire formats: streaming transcriptions (SSE without ``[DONE]``), streaming
chat completions (role chunk, word chunks, tool call chunks, finish chunk, usage chunk,
``[DONE]``), chunked PCM speech and the model list, with OpenAI's error bodies. Every request
is recorded in `FakeOpenAIConfig.requests` so tests can assert what a client sent. A scripted
model (`FakeOpenAIConfig.chat_script`, see `fake_tool_calls`) can answer with tool calls.

``create_fake_openai_app(config, realtime=...)`` also serves the Realtime WebSocket
(`fake_realtime`) on the same port, as OpenAI's API does; without it the fake is a compatible
server that has no Realtime endpoint: a WebSocket handshake anywhere is refused with HTTP 404
and OpenAI's error body, and recorded (endpoint ``websocket``).

Run it alone with ``python -m voice_fsm.testing.fake_openai --port 8100``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import re
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from email.message import Message
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voice_fsm.testing import fake_tool_calls as tool_wire
from voice_fsm.testing.fake_tool_calls import ChatScript, InvalidRequest
from voice_fsm.testing.threaded_server import serving_in_thread

if TYPE_CHECKING:
    from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

T = TypeVar("T")

SAMPLE_RATE = 24_000
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
    "shimmer", "verse",
)  # fmt: skip
MODELS = {  # id -> shutdown_date
    "gpt-transcribe": None,
    "gpt-live-transcribe": None,
    "gpt-6-luna": None,
    "gpt-realtime-2.1-mini": None,
    "gpt-4o-mini-tts": "2027-01-06",
    "tts-1": "2027-01-06",
    "gpt-4.1-mini": "2027-01-14",
    "gpt-4o-mini": "2027-01-14",
    "gpt-4o-mini-transcribe": "2027-02-26",
    "gpt-4o-transcribe": "2027-02-26",
    "whisper-1": "2027-02-26",
}
_ERROR_TYPES = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass(frozen=True, slots=True)
class UploadedFile:
    name: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class RecordedRequest:
    """What the fake received. `endpoint` is transcriptions, chat, speech, models, unknown or
    websocket (a handshake refused: the fake has no Realtime endpoint)."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    fields: dict[str, str] = field(default_factory=dict)
    file: UploadedFile | None = None
    client_port: int | None = None
    """The client's TCP port: requests with the same one came over one connection."""
    request_id: str = field(default_factory=lambda: "req_" + uuid.uuid4().hex)
    """Sent back as ``x-request-id``, as OpenAI does."""
    received_at: float = field(default_factory=time.monotonic)
    sent_at: list[float] = field(default_factory=list)
    """`time.monotonic()` as each piece of a streamed body went out (an SSE event, an audio
    chunk): with `received_at`, how long the fake took, for a benchmark's critical path."""


@dataclass
class FakeOpenAIConfig:
    """What the fake answers and how slowly. Delays are in seconds."""

    transcript: str = "What is the capital of France?"
    reply: str = "The capital of France is Paris."
    api_key: str | None = None  # None accepts any key; a key is always required
    stt_delay: float = 0.05
    stt_delay_per_audio_s: float = 0.0  # added per second of the uploaded recording
    llm_first_token_delay: float = 0.05
    llm_token_delay: float = 0.01
    tts_first_audio_delay: float = 0.05
    tts_chunk_delay: float = 0.01
    tts_chunk_bytes: int = 4800  # 100 ms of PCM16 at 24 kHz
    failures: dict[str, int] = field(default_factory=dict)  # endpoint -> HTTP status to answer
    chat_script: ChatScript | None = None
    """The chat model: what to answer (text, tool calls) to the request's messages and tools.
    None, or the script returning None, answers with `reply`."""
    requests: list[RecordedRequest] = field(default_factory=list)

    def received(self, endpoint: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.endpoint == endpoint]


# ---------------------------------------------------------------- deterministic content


def speech_pcm(text: str) -> bytes:
    """The PCM16 24 kHz mono the fake speaks for `text`: a 440 Hz tone, 0.2 s + 60 ms a char."""
    count = round(SAMPLE_RATE * (0.2 + 0.06 * len(text)))
    t = np.arange(count, dtype=np.float64) / SAMPLE_RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005) if count else t
    samples = 0.25 * np.sin(2 * math.pi * 440.0 * t) * ramp
    return (samples * 32767.0).astype("<i2").tobytes()


def words(text: str) -> list[str]:
    """`text` as word tokens with their leading spaces; they join back to `text`."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        pieces = [*pieces[:-1], pieces[-1] + rest] if pieces else [rest]
    return pieces


# ---------------------------------------------------------------- helpers


class OpenAIError(Exception):
    """Answered as OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status, message, kind, param, code,
        )  # fmt: skip

    @classmethod
    def for_status(cls, status: int) -> OpenAIError:
        kind, code, message = _ERROR_TYPES.get(status, ("api_error", None, f"Error {status}."))
        return cls(status, message, kind=kind, code=code)

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=_headers())


def transcription_usage(seconds: float, text: str) -> dict[str, Any]:
    """The token usage a transcription model reports for `seconds` of audio heard as `text`."""
    audio_tokens, output_tokens = max(1, round(seconds * 10)), len(words(text)) + 1
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + output_tokens,
    }


def _headers(recorded: RecordedRequest | None = None) -> dict[str, str]:
    return {"x-request-id": recorded.request_id if recorded else "req_" + uuid.uuid4().hex}


async def _timed(recorded: RecordedRequest, body: AsyncIterator[T]) -> AsyncIterator[T]:
    async for piece in body:
        recorded.sent_at.append(time.monotonic())
        yield piece


def _sse(recorded: RecordedRequest, events: AsyncIterator[str]) -> StreamingResponse:
    headers = {**_headers(recorded), "cache-control": "no-cache"}
    return StreamingResponse(
        _timed(recorded, events), media_type="text/event-stream", headers=headers
    )


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _mask(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 8 else "*" * len(key)


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], UploadedFile | None]:
    """The text fields and the `file` part of a multipart/form-data body."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise ValueError("expected multipart/form-data with a boundary")
    form: dict[str, str] = {}
    upload: UploadedFile | None = None
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        headers = Message()
        for line in head.decode("utf-8").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a part without a name")
        filename = headers.get_filename()
        if filename is not None and name == "file":
            content_type = headers.get("content-type", "application/octet-stream")
            upload = UploadedFile(name=filename, content_type=content_type, data=data)
        else:
            form[name] = data.decode("utf-8")
    return form, upload


async def _receive(request: Request, endpoint: str) -> RecordedRequest:
    """Record the request, then check its body, its key and the configured failures."""
    config: FakeOpenAIConfig = request.app.state.config
    recorded = RecordedRequest(
        endpoint=endpoint,
        method=request.method,
        path=request.url.path,
        headers={key.lower(): value for key, value in request.headers.items()},
        client_port=request.client.port if request.client else None,
    )
    config.requests.append(recorded)
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            recorded.fields, recorded.file = parse_multipart(content_type, body)
        elif body:
            recorded.json = json.loads(body)
            if not isinstance(recorded.json, dict):
                raise ValueError("the body is not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise OpenAIError(400, f"We could not parse the body of your request: {err}") from err
    auth = request.headers.get("authorization", "")
    key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    if not key:
        raise OpenAIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if config.api_key is not None and key != config.api_key:
        raise OpenAIError(
            401,
            f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    if endpoint in config.failures:
        raise OpenAIError.for_status(config.failures[endpoint])
    return recorded


# ---------------------------------------------------------------- endpoints


async def transcriptions(request: Request) -> Response:
    config: FakeOpenAIConfig = request.app.state.config
    recorded = await _receive(request, "transcriptions")
    form, upload = recorded.fields, recorded.file
    if "model" not in form:
        raise OpenAIError(400, "you must provide a model parameter")
    if upload is None:
        raise OpenAIError(400, "A file must be provided.", param="file")
    extension = upload.name.rpartition(".")[2].lower() if "." in upload.name else ""
    if extension not in AUDIO_EXTENSIONS:
        message = f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}"
        raise OpenAIError(400, message, param="file", code="invalid_value")
    seconds = 1.0
    if extension == "wav":
        try:
            with wave.open(io.BytesIO(upload.data), "rb") as wav:
                seconds = wav.getnframes() / wav.getframerate()
        except (wave.Error, EOFError, ZeroDivisionError) as err:
            message = "Audio file might be corrupted or unsupported"
            raise OpenAIError(400, message, param="file", code="invalid_value") from err
    text, model = config.transcript, form["model"]
    await asyncio.sleep(config.stt_delay + config.stt_delay_per_audio_s * seconds)
    if model == "whisper-1":
        usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(seconds)}
    else:
        usage = transcription_usage(seconds, text)
    if form.get("stream") == "true" and model != "whisper-1":  # whisper-1 ignores stream

        async def events() -> AsyncIterator[str]:
            for delta in words(text):
                yield _data({"type": "transcript.text.delta", "delta": delta})
            yield _data({"type": "transcript.text.done", "text": text, "usage": usage})

        return _sse(recorded, events())
    if form.get("response_format", "json") == "text":
        return PlainTextResponse(text + "\n", headers=_headers(recorded))
    return JSONResponse({"text": text, "usage": usage}, headers=_headers(recorded))


async def chat_completions(request: Request) -> Response:
    config: FakeOpenAIConfig = request.app.state.config
    recorded = await _receive(request, "chat")
    body = recorded.json or {}
    model, messages = body.get("model"), body.get("messages")
    if not model:
        raise OpenAIError(400, "you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        message = "Invalid 'messages': empty array. Expected an array with minimum length 1."
        raise OpenAIError(400, message, param="messages", code="empty_array")
    tools = tool_wire.check_tools(body)
    tool_wire.check_tool_messages(messages)
    answer = config.chat_script(messages, tools) if config.chat_script else None
    calls = tool_wire.wire_calls(answer) if answer else []
    tokens = words(answer.text if answer else config.reply)
    finish = "tool_calls" if calls else "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit < len(tokens):
        tokens, finish, calls = tokens[:limit], "length", []
    prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in messages)
    completion_tokens = len(tokens) + sum(
        1 + len(tool_wire.argument_fragments(call.arguments)) for call in calls
    )
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }
    if not body.get("stream"):
        await asyncio.sleep(
            config.llm_first_token_delay + config.llm_token_delay * completion_tokens
        )
        reply: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(tokens) or (None if calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if calls:
            reply["tool_calls"] = tool_wire.message_tool_calls(calls)
        choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}
        completion = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return JSONResponse(completion, headers=_headers(recorded))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload = {**base, "object": "chat.completion.chunk", "choices": [choice]}
        return _data({**payload, "usage": None} if include_usage else payload)

    async def events() -> AsyncIterator[str]:
        # Each token at its own time from the start (not a sleep after the last one), so the
        # timer's lateness does not add up over a reply and the profile holds.
        start = asyncio.get_running_loop().time() + config.llm_first_token_delay
        await _sleep_until(start)
        # OpenAI opens with the role and empty content, unless the reply is only tool calls:
        # then the first call's delta carries the role.
        if tokens or not calls:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
        deltas = [{"content": token} for token in tokens]
        deltas += tool_wire.streamed_call_deltas(calls, first=not deltas)
        for index, delta in enumerate(deltas):
            await _sleep_until(start + index * config.llm_token_delay)
            yield chunk(delta)
        yield chunk({}, finish)
        if include_usage:
            yield _data({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

    return _sse(recorded, events())


async def speech(request: Request) -> Response:
    config: FakeOpenAIConfig = request.app.state.config
    recorded = await _receive(request, "speech")
    body = recorded.json or {}
    for name in ("model", "input", "voice"):
        if not body.get(name):
            message = f"Missing required parameter: '{name}'."
            raise OpenAIError(400, message, param=name, code="missing_required_parameter")
    text, voice = str(body["input"]), body["voice"]
    if len(text) > 4096:
        message = (
            "Invalid 'input': string too long. Expected a string with maximum length 4096, "
            f"but got a string with length {len(text)} instead."
        )
        raise OpenAIError(400, message, param="input", code="string_above_max_length")
    if voice not in VOICES:
        supported = ", ".join(f"'{v}'" for v in VOICES)
        message = f"Invalid value: '{voice}'. Supported values are: {supported}."
        raise OpenAIError(400, message, param="voice", code="invalid_value")
    audio_format = body.get("response_format", "mp3")
    if audio_format not in ("pcm", "wav"):
        message = f"The fake speaks only response_format pcm or wav, not {audio_format!r}."
        raise OpenAIError(400, message, param="response_format")
    audio = speech_pcm(text)
    if audio_format == "wav":
        audio = _wav_header(len(audio)) + audio
    size = max(1, config.tts_chunk_bytes)
    chunks = [audio[start : start + size] for start in range(0, len(audio), size)]

    async def paced() -> AsyncIterator[bytes]:
        await asyncio.sleep(config.tts_first_audio_delay)
        for index, piece in enumerate(chunks):
            if index:
                await asyncio.sleep(config.tts_chunk_delay)
            yield piece

    if body.get("stream_format") == "sse":

        async def events() -> AsyncIterator[str]:
            async for piece in paced():
                yield _data(
                    {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                )
            tokens = len(words(text))
            usage = {"input_tokens": tokens, "output_tokens": len(chunks)}
            usage["total_tokens"] = tokens + len(chunks)
            yield _data({"type": "speech.audio.done", "usage": usage})

        return _sse(recorded, events())
    media_type = "audio/wav" if audio_format == "wav" else "audio/pcm"
    return StreamingResponse(
        _timed(recorded, paced()), media_type=media_type, headers=_headers(recorded)
    )


async def models(request: Request) -> Response:
    await _receive(request, "models")
    data = [
        {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system",
         "shutdown_date": shutdown}
        for name, shutdown in MODELS.items()
    ]  # fmt: skip
    return JSONResponse({"object": "list", "data": data}, headers=_headers())


async def unknown(request: Request) -> Response:
    await _receive(request, "unknown")
    raise OpenAIError(404, f"Invalid URL ({request.method} {request.url.path})")


async def _openai_error(_request: Request, err: Exception) -> Response:
    if isinstance(err, InvalidRequest):
        err = OpenAIError(400, err.message, param=err.param, code=err.code)
    assert isinstance(err, OpenAIError)
    return err.response()


async def no_websocket(websocket: WebSocket) -> None:
    """A WebSocket handshake on a server without a Realtime endpoint: recorded, then refused
    with 404 and OpenAI's error body (what a compatible server without it answers)."""
    config: FakeOpenAIConfig = websocket.app.state.config
    headers = {key.lower(): value for key, value in websocket.headers.items()}
    path = websocket.url.path
    config.requests.append(
        RecordedRequest("websocket", "GET", path, headers, fields=dict(websocket.query_params))
    )
    body = OpenAIError(404, f"Invalid URL (GET {path})").response()
    await websocket.send_denial_response(body)


def create_fake_openai_app(
    config: FakeOpenAIConfig, *, realtime: FakeRealtimeConfig | None = None
) -> Starlette:
    """A Starlette app serving OpenAI's API under /v1 with `config`'s answers, and with
    `realtime` the Realtime WebSocket at /v1/realtime (see `fake_realtime`); without it, every
    WebSocket handshake is refused with 404, as by a compatible server that lacks the endpoint
    (with it, those at other paths)."""
    websocket_routes: list[BaseRoute] = [WebSocketRoute("/{path:path}", no_websocket)]
    if realtime is not None:
        from voice_fsm.testing.fake_realtime import realtime_routes

        websocket_routes[0:0] = realtime_routes(realtime)
    app = Starlette(
        routes=[
            *websocket_routes,
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/{path:path}", unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ],
        exception_handlers={OpenAIError: _openai_error, InvalidRequest: _openai_error},
    )
    app.state.config = config
    app.state.requests = config.requests
    return app


def _wav_header(pcm_bytes: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(b"")
    header = bytearray(buffer.getvalue())
    header[4:8] = (36 + pcm_bytes).to_bytes(4, "little")
    header[40:44] = pcm_bytes.to_bytes(4, "little")
    return bytes(header)


# ---------------------------------------------------------------- running it


@contextmanager
def running_fake_openai(
    config: FakeOpenAIConfig,
    host: str = "127.0.0.1",
    *,
    realtime: FakeRealtimeConfig | None = None,
) -> Iterator[str]:
    """Serve the fake under uvicorn in a thread on a free port; yields its base URL (.../v1).
    With `realtime`, the Realtime WebSocket too; without it, no Realtime endpoint."""
    app = create_fake_openai_app(config, realtime=realtime)
    with serving_in_thread(app, "fake-openai", host) as base_url:
        yield base_url


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m voice_fsm.testing.fake_openai", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    defaults = FakeOpenAIConfig()
    for item in fields(FakeOpenAIConfig):
        if item.name in ("failures", "requests", "chat_script"):
            continue
        value = getattr(defaults, item.name)
        kind = type(value) if value is not None else str
        flag = "--" + item.name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=value, help=f"default: {value!r}")
    args = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    config = FakeOpenAIConfig(**args)
    print(f"fake OpenAI API at http://{host}:{port}/v1", flush=True)
    uvicorn.run(create_fake_openai_app(config), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
