"""A connection to the provider is open before the turn's first request needs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from voice_fsm.adapters.base import ChatMessage, Preparable, Startable
from voice_fsm.adapters.openai import warm_connection
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.testing import FakeOpenAIConfig

from support.servers import eventually, free_port

QUESTION = [ChatMessage("user", "What is the capital of France?")]
MakeLlm = Callable[[str], OpenAILanguageModel]


async def reply(llm: OpenAILanguageModel) -> str:
    return "".join([delta async for delta in llm.reply(QUESTION)])


async def test_the_first_reply_finds_the_connection_open(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: MakeLlm
) -> None:
    config, base_url = fake_openai
    llm = make_openai_llm(base_url)
    assert isinstance(llm, Startable)
    await llm.start()  # at the server's start-up
    await eventually(lambda: config.received("models"))
    assert await reply(llm) == config.reply
    (warm,) = config.received("models")
    (chat,) = config.received("chat")
    assert warm.method == "GET"
    assert chat.client_port == warm.client_port  # no new connection for the reply


async def test_a_turn_warms_the_connection_only_when_it_may_have_gone(
    fake_openai: tuple[FakeOpenAIConfig, str],
    make_openai_llm: MakeLlm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, base_url = fake_openai
    llm = make_openai_llm(base_url)
    assert isinstance(llm, Preparable)
    await reply(llm)
    llm.prepare()  # a turn right after the last one: its connection is still in the pool
    await asyncio.sleep(0.1)
    assert config.received("models") == []

    monkeypatch.setattr(warm_connection, "STALE_AFTER_S", 0.0)  # as if long idle
    llm.prepare()
    llm.prepare()  # one warm-up at a time
    await eventually(lambda: config.received("models"))
    await asyncio.sleep(0.1)
    assert len(config.received("models")) == 1


async def test_a_provider_out_of_reach_is_only_logged(
    make_openai_llm: MakeLlm,
) -> None:
    llm = make_openai_llm(f"http://127.0.0.1:{free_port()}/v1")
    with capture_logs() as logs:
        await llm.start()
        await eventually(lambda: any(e["event"] == "connection.warm_failed" for e in logs))
    (failed,) = [e for e in logs if e["event"] == "connection.warm_failed"]
    assert failed["stage"] == "llm"
    assert failed["error"] == "APIConnectionError"
