"""OpenAITextToSpeech against the Speech API's wire format, mocked with respx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.tts import OpenAITextToSpeech
from voice_fsm.errors import ErrorCode, ProviderError
from voice_fsm.settings import Settings, TtsSettings

from support.openai_wire import BASE_URL, KEY, drain

# Raw PCM16 as the API sends it: chunks of any length, odd ones included.
CHUNKS = [bytes(range(7)), b"\x10\x20" * 2400, b"\xff", bytes(range(200, 256))]


def make_tts(**overrides: Any) -> OpenAITextToSpeech:
    overrides.setdefault("max_retries", 0)
    base_url = overrides.pop("base_url", None)
    settings = Settings(
        _env_file=None,
        openai_api_key=SecretStr(KEY),
        openai_base_url=base_url,
        tts=TtsSettings(**overrides),
    )
    client = make_openai_client(settings, settings.tts)
    return OpenAITextToSpeech(settings.tts, client, settings.secrets())


class ChunkedStream(httpx.AsyncByteStream):
    """Sends `chunks` one by one; after the first, waits for `release` (if given). Records
    whether the client closed it."""

    def __init__(self, chunks: list[bytes], release: asyncio.Event | None = None) -> None:
        self.chunks = chunks
        self.release = release
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, piece in enumerate(self.chunks):
            if index == 1 and self.release is not None:
                await self.release.wait()
            yield piece

    async def aclose(self) -> None:
        self.closed = True


def pcm_response(stream: httpx.AsyncByteStream) -> httpx.Response:
    return httpx.Response(
        200,
        stream=stream,
        headers={"content-type": "audio/pcm", "transfer-encoding": "chunked"},
    )


async def test_forwards_each_chunk_as_it_arrives() -> None:
    tts = make_tts()
    release = asyncio.Event()
    stream = ChunkedStream(CHUNKS, release=release)
    received: list[bytes] = []
    with respx.mock(base_url=BASE_URL) as router:
        route = router.post("/audio/speech").mock(return_value=pcm_response(stream))
        async with aclosing(tts.synthesize("Hello there.")) as chunks:
            # The first chunk arrives while the server still holds back the rest: nothing
            # waits for the whole file.
            async with asyncio.timeout(2):
                received.append(await anext(chunks))
            release.set()
            received.extend([c async for c in chunks])
    await tts.aclose()

    assert received == CHUNKS
    assert stream.closed
    request = route.calls.last.request
    assert request.headers["accept"] == "application/octet-stream"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "model": "gpt-4o-mini-tts",
        "voice": "alloy",
        "input": "Hello there.",
        "response_format": "pcm",
        "speed": 1.0,
    }


async def test_voice_argument_and_instructions_are_sent() -> None:
    tts = make_tts(
        model="kokoro",
        voice="af_heart",
        speed=1.25,
        instructions="Speak calmly.",
        base_url="http://localhost:8880/v1",
    )
    with respx.mock(base_url="http://localhost:8880/v1") as router:
        route = router.post("/audio/speech").mock(
            return_value=pcm_response(ChunkedStream([b"\x00\x01"]))
        )
        received = [c async for c in tts.synthesize("Hi.", voice="bf_emma")]
    await tts.aclose()

    assert received == [b"\x00\x01"]
    assert json.loads(route.calls.last.request.content) == {
        "model": "kokoro",
        "voice": "bf_emma",
        "input": "Hi.",
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "Speak calmly.",
    }


class CutStream(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield CHUNKS[0]
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body (incomplete chunked read)"
        )


async def test_connection_cut_mid_audio_is_unavailable() -> None:
    tts = make_tts()
    received: list[bytes] = []
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/audio/speech").mock(return_value=pcm_response(CutStream()))
        with pytest.raises(ProviderError) as caught:
            await drain(tts.synthesize("Hello."), into=received)
    await tts.aclose()

    assert received == CHUNKS[:1]
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert caught.value.message == (
        "Connection to OpenAI text-to-speech failed: peer closed connection without sending "
        "complete message body (incomplete chunked read)"
    )


async def test_aclose_closes_the_client() -> None:
    tts = make_tts()
    await tts.aclose()
    assert tts._client.is_closed()
    assert (tts.provider, tts.model) == ("openai", "gpt-4o-mini-tts")
