"""The fake OpenAI server, checked through the real `openai` SDK and raw HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from voice_fsm.audio import pcm_to_wav
from voice_fsm.testing import FakeOpenAIConfig, create_fake_openai_app, speech_pcm
from voice_fsm.testing.fake_openai import parse_multipart, running_fake_openai, words

KEY = "sk-test-0123456789"
WAV = pcm_to_wav(bytes(48_000))  # one second of silence


@pytest.fixture
def config() -> FakeOpenAIConfig:
    return FakeOpenAIConfig(
        api_key=KEY,
        stt_delay=0,
        llm_first_token_delay=0,
        llm_token_delay=0,
        tts_first_audio_delay=0,
        tts_chunk_delay=0,
    )


@pytest.fixture
async def http(config: FakeOpenAIConfig) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_openai_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield client


def sdk(http: httpx.AsyncClient, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://fake/v1", http_client=http, max_retries=0
    )


async def test_streaming_transcription(config: FakeOpenAIConfig, http: httpx.AsyncClient) -> None:
    stream = await sdk(http).audio.transcriptions.create(
        model="gpt-transcribe", file=("turn.wav", WAV, "audio/wav"), stream=True, language="en"
    )
    events = [event async for event in stream]
    assert [event.type for event in events[:-1]] == ["transcript.text.delta"] * 6
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == config.transcript
    assert done.usage is not None
    assert "".join(getattr(event, "delta", "") for event in events) == config.transcript
    (request,) = config.received("transcriptions")
    assert request.fields == {"model": "gpt-transcribe", "stream": "true", "language": "en"}
    assert request.file is not None
    assert (request.file.name, request.file.content_type) == ("turn.wav", "audio/wav")
    assert request.file.data == WAV
    assert request.headers["authorization"] == f"Bearer {KEY}"


async def test_raw_sse_of_a_transcription_has_no_done_marker(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"model": "gpt-transcribe", "stream": "true"},
        files={"file": ("turn.wav", WAV, "audio/wav")},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    assert response.text.endswith("\n\n")


async def test_plain_and_whisper_transcriptions_answer_json(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    client = sdk(http)
    result = await client.audio.transcriptions.create(
        model="gpt-transcribe", file=("turn.wav", WAV, "audio/wav")
    )
    assert result.text == config.transcript
    # whisper-1 ignores stream=true: the SDK's stream then yields nothing.
    stream = await client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", WAV, "audio/wav"), stream=True
    )
    assert [event async for event in stream] == []


async def test_raw_bytes_upload_is_rejected_like_openai(http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(http).audio.transcriptions.create(model="gpt-transcribe", file=WAV)
    assert caught.value.code == "invalid_value"
    assert "Invalid file format" in caught.value.message


async def test_a_corrupt_wav_is_rejected(http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.BadRequestError, match="corrupted"):
        await sdk(http).audio.transcriptions.create(
            model="gpt-transcribe", file=("turn.wav", b"RIFF....", "audio/wav")
        )


async def test_streaming_chat(config: FakeOpenAIConfig, http: httpx.AsyncClient) -> None:
    stream = await sdk(http).chat.completions.create(
        model="gpt-6-luna",
        messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    contents = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert contents == ["The", " capital", " of", " France", " is", " Paris."]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    (request,) = config.received("chat")
    assert request.json is not None
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}


async def test_raw_chat_stream_ends_with_done(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = await http.post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body
    )
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunk = json.loads(lines[0].removeprefix("data: "))
    assert chunk["object"] == "chat.completion.chunk"
    assert "usage" not in chunk  # no include_usage, no usage field


async def test_chat_without_stream_and_with_a_token_limit(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    client = sdk(http)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hi"}
    ]
    completion = await client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == config.reply
    short = await client.chat.completions.create(
        model="m", messages=messages, max_completion_tokens=2
    )
    assert short.choices[0].message.content == "The capital"
    assert short.choices[0].finish_reason == "length"


async def test_speech_streams_deterministic_pcm(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    config.tts_chunk_bytes = 4801  # odd: clients must re-frame
    async with sdk(http).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", input="Hello there.", voice="alloy", response_format="pcm"
    ) as response:
        audio = b"".join([chunk async for chunk in response.iter_bytes()])
    assert audio == speech_pcm("Hello there.")
    assert len(speech_pcm("Hello there, how are you?")) > len(audio)
    (request,) = config.received("speech")
    assert request.json is not None
    assert request.json["response_format"] == "pcm"
    assert request.headers["accept"] == "application/octet-stream"


async def test_speech_rejects_an_unknown_voice(http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(http).audio.speech.create(
            model="gpt-4o-mini-tts", input="Hi.", voice="robot", response_format="pcm"
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["param"], body["code"]) == (
        "invalid_request_error",
        "voice",
        "invalid_value",
    )
    assert body["message"].startswith("Invalid value: 'robot'. Supported values are: 'alloy'")


async def test_models_list_has_shutdown_dates(http: httpx.AsyncClient) -> None:
    page = await sdk(http).models.list()
    dates = {model.id: model.model_extra.get("shutdown_date") for model in page.data}  # type: ignore[union-attr]
    assert dates["gpt-4o-mini-tts"] == "2027-01-06"
    assert dates["gpt-transcribe"] is None


async def test_a_wrong_key_gets_openai_401(
    config: FakeOpenAIConfig, http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(http, "sk-wrong-0000000000").models.list()
    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id is not None
    assert "sk-wrong-0000000000" not in caught.value.message  # masked, like OpenAI does
    assert config.requests[-1].headers["authorization"] == "Bearer sk-wrong-0000000000"


async def test_a_missing_key_and_an_unknown_url(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/models")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = await http.post("/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (403, openai.PermissionDeniedError),
    ],
)
async def test_configured_failures(
    config: FakeOpenAIConfig, http: httpx.AsyncClient, status: int, error: type[Exception]
) -> None:
    config.failures["chat"] = status
    with pytest.raises(error):
        await sdk(http).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )


def test_words_join_back() -> None:
    for text in ("Hello there.", "  two  spaces  ", "", "one"):
        assert "".join(words(text)) == text


def test_parse_multipart_keeps_binary_exactly() -> None:
    payload = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n"
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"model": "m", "stream": "true"},
        files={"file": ("a b.wav", payload, "audio/wav")},
    )
    form, upload = parse_multipart(request.headers["content-type"], request.read())
    assert form == {"model": "m", "stream": "true"}
    assert upload is not None
    assert (upload.name, upload.content_type, upload.data) == ("a b.wav", "audio/wav", payload)


def test_running_in_a_thread(config: FakeOpenAIConfig) -> None:
    with running_fake_openai(config) as base_url:
        response = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/v1")
