"""OpenAISpeechToText against the transcription endpoint's wire format, mocked with respx."""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from voice_fsm.adapters.base import TranscriptDelta, TranscriptDone, TranscriptEvent
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.stt import OpenAISpeechToText
from voice_fsm.errors import ErrorCode, ProviderError
from voice_fsm.settings import Settings, SttSettings

from support.openai_wire import BASE_URL, KEY, drain, error_response

# 10 ms of a little ramp, so a byte order or sample width mistake changes the bytes.
PCM = b"".join(i.to_bytes(2, "little", signed=True) for i in range(-1200, 1200, 10))
USAGE = {
    "type": "tokens",
    "input_tokens": 14,
    "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
    "output_tokens": 3,
    "total_tokens": 17,
}


def make_stt(**overrides: Any) -> OpenAISpeechToText:
    overrides.setdefault("max_retries", 0)
    settings = Settings(_env_file=None, openai_api_key=SecretStr(KEY), stt=SttSettings(**overrides))
    client = make_openai_client(settings, settings.stt)
    return OpenAISpeechToText(settings.stt, client, settings.secrets())


def sse(*events: dict[str, Any]) -> httpx.Response:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def delta(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": text, "logprobs": None}


def done(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": text, "logprobs": None, "usage": USAGE}


async def collect(stt: OpenAISpeechToText, language: str | None = None) -> list[TranscriptEvent]:
    return [event async for event in stt.transcribe(PCM, language=language)]


@dataclass
class Part:
    filename: str | None
    content_type: str
    data: bytes


def form(request: httpx.Request) -> dict[str, Part]:
    """The multipart/form-data fields of `request`, by name, in the order sent."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + request.content)
    assert message.is_multipart()
    parts: dict[str, Part] = {}
    for part in message.get_payload():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts[name] = Part(part.get_filename(), part.get_content_type(), payload)
    return parts


def assert_wav_of_pcm(data: bytes) -> None:
    with wave.open(io.BytesIO(data), "rb") as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 24_000
        assert wav.readframes(wav.getnframes()) == PCM


async def test_streams_deltas_then_done_and_sends_a_wav_file() -> None:
    stt = make_stt()
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/transcriptions").mock(
            return_value=sse(delta("Hel"), delta("lo"), delta(""), delta("."), done("Hello."))
        )
        events = await collect(stt)
    await stt.aclose()

    assert events == [
        TranscriptDelta("Hel"),
        TranscriptDelta("lo"),
        TranscriptDelta("."),
        TranscriptDone("Hello."),
    ]
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    fields = form(request)
    assert list(fields) == ["model", "stream", "file"]
    assert fields["model"].data == b"gpt-transcribe"
    assert fields["stream"].data == b"true"
    assert fields["file"].filename == "turn.wav"
    assert fields["file"].content_type == "audio/wav"
    assert_wav_of_pcm(fields["file"].data)


@pytest.mark.parametrize(
    ("configured", "argument", "sent"),
    [("en", None, b"en"), ("en", "de", b"de"), (None, "fr", b"fr")],
)
async def test_language_argument_wins_over_settings(
    configured: str | None, argument: str | None, sent: bytes
) -> None:
    stt = make_stt(language=configured)
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/transcriptions").mock(return_value=sse(done("Hallo.")))
        assert await collect(stt, language=argument) == [TranscriptDone("Hallo.")]
    await stt.aclose()

    assert form(route.calls.last.request)["language"].data == sent


async def test_plain_json_answer_to_a_stream_request_is_read_without_asking_again() -> None:
    # whisper-1 (and some compatible servers) ignore `stream` and answer JSON; the SDK's
    # stream then yields nothing. The text is in that body: no second upload.
    stt = make_stt(model="whisper-1")
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/transcriptions").mock(
            return_value=httpx.Response(
                200, json={"text": "Hello there.", "usage": {"type": "duration", "seconds": 1}}
            )
        )
        events = await collect(stt)
    await stt.aclose()

    assert events == [TranscriptDone("Hello there.")]
    assert route.call_count == 1


async def test_empty_stream_falls_back_to_a_non_streaming_request() -> None:
    stt = make_stt()
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/transcriptions").mock(
            side_effect=[
                httpx.Response(200, content=b"", headers={"content-type": "text/event-stream"}),
                httpx.Response(200, json={"text": "Hello again.", "usage": USAGE}),
            ]
        )
        events = await collect(stt, language="en")
    await stt.aclose()

    assert events == [TranscriptDone("Hello again.")]
    assert route.call_count == 2
    fallback = form(route.calls[1].request)
    assert "stream" not in fallback
    assert fallback["response_format"].data == b"json"
    assert fallback["language"].data == b"en"
    assert fallback["model"].data == b"gpt-transcribe"
    assert fallback["file"].filename == "turn.wav"
    assert_wav_of_pcm(fallback["file"].data)


async def test_deltas_without_a_done_event_end_with_their_join() -> None:
    stt = make_stt()
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/transcriptions").mock(
            return_value=sse(delta("Good"), delta(" morning."))
        )
        events = await collect(stt)
    await stt.aclose()

    assert events == [
        TranscriptDelta("Good"),
        TranscriptDelta(" morning."),
        TranscriptDone("Good morning."),
    ]
    assert route.call_count == 1


async def test_error_event_mid_stream_is_a_provider_error() -> None:
    stt = make_stt()
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/audio/transcriptions").mock(
            return_value=sse(
                delta("Hel"),
                {
                    "error": {
                        "message": "Audio could not be decoded.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        )
        events: list[TranscriptEvent] = []
        with pytest.raises(ProviderError) as caught:
            await drain(stt.transcribe(PCM), into=events)
    await stt.aclose()

    assert events == [TranscriptDelta("Hel")]
    assert caught.value.code is ErrorCode.PROVIDER_ERROR
    assert caught.value.message == "OpenAI speech-to-text failed: Audio could not be decoded."


async def test_server_error_then_success_is_retried_with_the_file_again() -> None:
    stt = make_stt(max_retries=1)
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/transcriptions").mock(
            side_effect=[
                # The SDK honours OpenAI's retry-after-ms instead of its 0.5 s backoff.
                error_response(
                    503, "Service unavailable.", "server_error", None, **{"retry-after-ms": "10"}
                ),
                sse(delta("Hi."), done("Hi.")),
            ]
        )
        events = await collect(stt)
    await stt.aclose()

    assert events == [TranscriptDelta("Hi."), TranscriptDone("Hi.")]
    assert route.call_count == 2
    assert_wav_of_pcm(form(route.calls[1].request)["file"].data)


async def test_aclose_closes_the_client() -> None:
    stt = make_stt()
    await stt.aclose()
    assert stt._client.is_closed()
    assert (stt.provider, stt.model) == ("openai", "gpt-transcribe")
