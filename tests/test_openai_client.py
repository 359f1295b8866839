"""The provider clients: a pause between turns does not cost new connections."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.openai_client import make_openai_client
from voice_fsm.adapters.openai_llm import OpenAILanguageModel
from voice_fsm.settings import LlmSettings, Settings
from voice_fsm.testing import FakeOpenAIConfig, running_fake_openai

QUESTION = [ChatMessage("user", "What is the capital of France?")]


async def test_a_turn_after_a_pause_reuses_the_connection() -> None:
    fake = FakeOpenAIConfig(llm_first_token_delay=0.0, llm_token_delay=0.0)
    with running_fake_openai(fake) as base_url:
        settings = Settings(
            _env_file=None,
            openai_api_key=SecretStr("sk-test-keepalive"),
            openai_base_url=base_url,
            llm=LlmSettings(max_retries=0),
        )
        llm = OpenAILanguageModel(settings.llm, make_openai_client(settings, settings.llm))
        try:
            for pause in (0.0, 6.0):  # httpx's default keep-alive is 5 s
                await asyncio.sleep(pause)
                assert "".join([delta async for delta in llm.reply(QUESTION)])
        finally:
            await llm.aclose()
    first, second = fake.received("chat")
    assert first.client_port is not None
    assert second.client_port == first.client_port
