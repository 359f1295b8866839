"""A streamed reply leaves its connection to the provider for the next turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import httpx

from voice_fsm.adapters.base import ChatMessage, TranscriptDone
from voice_fsm.adapters.fake import tone
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.connection_reuse import ConnectionReuseTransport
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.adapters.openai.stt import OpenAISpeechToText
from voice_fsm.testing import FakeOpenAIConfig

from support.openai_wire import openai_settings

QUESTION = [ChatMessage("user", "What is the capital of France?")]
MakeLlm = Callable[[str], OpenAILanguageModel]


async def test_replies_one_after_another_share_one_connection(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: MakeLlm
) -> None:
    config, base_url = fake_openai
    llm = make_openai_llm(base_url)
    for _ in range(3):
        assert "".join([delta async for delta in llm.reply(QUESTION)]) == config.reply
    ports = {request.client_port for request in config.received("chat")}
    assert len(ports) == 1


async def test_transcriptions_one_after_another_share_one_connection(
    fake_openai: tuple[FakeOpenAIConfig, str],
) -> None:
    config, base_url = fake_openai
    settings = openai_settings("stt", base_url=base_url)
    stt = OpenAISpeechToText(settings.stt, make_openai_client(settings, settings.stt))
    try:
        for _ in range(3):
            events = [event async for event in stt.transcribe(tone(500))]
            assert events[-1] == TranscriptDone(config.transcript)
    finally:
        await stt.aclose()
    requests = config.received("transcriptions")
    assert [request.fields["stream"] for request in requests] == ["true"] * 3
    assert len({request.client_port for request in requests}) == 1


async def test_a_reply_cut_short_drops_its_connection_at_once(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: MakeLlm
) -> None:
    config, base_url = fake_openai
    config.llm_token_delay = 60.0  # the rest of the reply would take minutes
    llm = make_openai_llm(base_url)
    async with asyncio.timeout(5):  # not waiting for the rest of the reply
        async with aclosing(llm.reply(QUESTION)) as deltas:
            assert await anext(deltas)
    config.llm_token_delay = 0.0
    assert "".join([delta async for delta in llm.reply(QUESTION)]) == config.reply
    first, second = config.received("chat")
    assert first.client_port != second.client_port


async def test_a_stream_left_open_after_done_is_closed_after_a_short_wait() -> None:
    closed = asyncio.Event()

    class Stalled(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'data: {"x": 1}\n\n'
            yield b"data: [DONE]\n\n"
            await asyncio.Event().wait()  # a server that never ends the body
            yield b""

        async def aclose(self) -> None:
            closed.set()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Stalled())

    transport = ConnectionReuseTransport(httpx.MockTransport(answer))
    async with httpx.AsyncClient(transport=transport) as client:
        async with asyncio.timeout(5):
            async with client.stream("POST", "http://provider.test/v1/chat/completions") as r:
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        break
    assert closed.is_set()
