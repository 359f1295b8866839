"""The provider clients: a pause between turns does not cost new connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.testing import FakeOpenAIConfig

QUESTION = [ChatMessage("user", "What is the capital of France?")]


async def test_a_turn_after_a_pause_reuses_the_connection(
    fake_openai: tuple[FakeOpenAIConfig, str],
    make_openai_llm: Callable[[str], OpenAILanguageModel],
) -> None:
    fake, base_url = fake_openai
    llm = make_openai_llm(base_url)
    for pause in (0.0, 6.0):  # httpx's default keep-alive is 5 s
        await asyncio.sleep(pause)
        assert "".join([delta async for delta in llm.reply(QUESTION)])
    first, second = fake.received("chat")
    assert first.client_port is not None
    assert second.client_port == first.client_port
