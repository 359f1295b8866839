"""The Agents SDK's `RealtimeAgent`, run by `RealtimeRunner` against voice-fsm's `/v1/realtime`.

The SDK opens its own socket at `model_config["url"]` with the API key as a Bearer token. The
server has fake speech engines; its language model is OpenAI's adapter on the fake OpenAI, which
scripts a call of the agent's tool. A text message gets the call, the SDK runs the tool and sends
its output back, and the agent's spoken answer arrives; with the SDK's default turn detection
(`semantic_vad`) and the embedded detector, a spoken question is heard and answered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from test_realtime_endpoint import MODEL, serving
from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from voice_fsm.providers import Pipeline
from voice_fsm.service_settings import AuthSettings
from voice_fsm.testing import FakeOpenAIConfig
from voice_fsm.testing.fake_tool_calls import calling

from session_harness import make_settings
from support.local import require_local_engines
from support.servers import skip_or_fail

pytestmark = pytest.mark.integration

if os.environ.get("CI") != "true":
    pytest.importorskip("agents", reason="the Agents SDK (openai-agents, the test extra)")
try:
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
except ImportError:  # only under CI=true, where the test extra is installed
    skip_or_fail("the Agents SDK (openai-agents) is not installed: pip install -e '.[test]'")

KEY = "sk-voice-agents-0123456789"
TIMEOUT = 20.0
INSTRUCTIONS = "Answer in one short sentence."


def agent_with_weather(calls: list[str]) -> RealtimeAgent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        calls.append(city)
        return f"It is sunny in {city}."

    return RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS, tools=[get_weather])


async def run_agent(
    port: int, agent: RealtimeAgent[Any], model_settings: dict[str, Any]
) -> AsyncIterator[RealtimeSession]:
    config: Any = {"model_settings": model_settings}
    runner = RealtimeRunner(agent, config=config)
    session = await runner.run(
        model_config={
            "url": f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}",
            "api_key": KEY,
        }
    )
    async with session:
        yield session


async def events_until(session: RealtimeSession, agent_ends: int) -> list[Any]:
    """The session's events up to its `agent_ends`-th `agent_end` (one per response)."""
    seen: list[Any] = []

    async def read() -> None:
        async for event in session:
            seen.append(event)
            if sum(e.type == "agent_end" for e in seen) == agent_ends:
                return

    await asyncio.wait_for(read(), TIMEOUT)
    return seen


def last_history(events: list[Any]) -> list[Any]:
    history: list[Any] = [e for e in events if e.type == "history_updated"][-1].history
    return history


def spoken_reply(history: list[Any]) -> tuple[str | None, str]:
    """The last item's role and its audio transcript."""
    last = history[-1]
    return last.role, "".join(part.transcript or "" for part in last.content)


@pytest.fixture
async def tool_port(
    fake_openai: tuple[FakeOpenAIConfig, str], make_openai_llm: Callable[[str], Any]
) -> AsyncIterator[int]:
    fake_openai[0].chat_script = calling(("get_weather", {"city": "Paris"}))
    pipeline = Pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=make_openai_llm(fake_openai[1]),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002),
    )
    # The server asks for a key: the SDK sends its api_key as a Bearer token.
    auth = AuthSettings(api_keys=[SecretStr(KEY)])
    settings = make_settings().model_copy(update={"auth": auth})
    async with serving(settings, pipeline=pipeline) as port:
        yield port


async def test_a_realtime_agent_calls_its_tool_and_speaks_the_answer(
    tool_port: int, fake_openai: tuple[FakeOpenAIConfig, str]
) -> None:
    calls: list[str] = []
    agent = agent_with_weather(calls)
    # A text message needs no turn detection (this server has no detector).
    async for session in run_agent(tool_port, agent, {"turn_detection": None}):
        await session.send_message("What is the weather in Paris?")
        events = await events_until(session, agent_ends=2)  # the call, then the answer

    assert [e.error for e in events if e.type == "error"] == []
    assert calls == ["Paris"]
    (tool_end,) = [e for e in events if e.type == "tool_end"]
    assert tool_end.tool.name == "get_weather"
    assert tool_end.output == "It is sunny in Paris."
    assert sum(len(e.audio.data) for e in events if e.type == "audio") > 0

    history = last_history(events)
    assert [item.type for item in history] == ["message", "function_call", "message"]
    assert history[0].role == "user"
    assert history[0].content[0].text == "What is the weather in Paris?"
    assert history[1].name == "get_weather"
    assert history[1].output == "It is sunny in Paris."
    assert spoken_reply(history) == ("assistant", "Here is what I found: It is sunny in Paris.")

    # The model saw the agent's instructions and tool in both requests, the output in the second.
    bodies = [r.json for r in fake_openai[0].received("chat") if r.json is not None]
    assert len(bodies) == 2
    for body in bodies:
        assert body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
        assert [tool["function"]["name"] for tool in body["tools"]] == ["get_weather"]
    assert bodies[1]["messages"][-1]["content"] == "It is sunny in Paris."


@pytest.fixture
async def vad_port() -> AsyncIterator[int]:
    require_local_engines()
    from voice_fsm.adapters.local.builders import vad_factory

    settings = make_settings()
    pipeline = Pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=FakeLanguageModel(first_token_delay=0.01, token_delay=0.002),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002),
        vad=vad_factory(settings),
    )
    async with serving(settings, pipeline=pipeline) as port:
        yield port


async def test_with_the_sdks_default_turn_detection_a_spoken_question_is_answered(
    vad_port: int,
) -> None:
    from voice_fsm.testing.speech import silence, spoken

    question = spoken("What is the capital of France?", lead_s=0.3) + silence(1.0)
    async for session in run_agent(vad_port, agent_with_weather([]), {}):
        for offset in range(0, len(question), 4800):  # 100 ms at a time, as a microphone
            await session.send_audio(question[offset : offset + 4800])
            await asyncio.sleep(0.01)
        events = await events_until(session, agent_ends=1)

    assert [e.error for e in events if e.type == "error"] == []
    assert sum(len(e.audio.data) for e in events if e.type == "audio") > 0
    history = last_history(events)
    user = history[0]
    assert user.role == "user"
    assert user.content[0].transcript == "What is the capital of France?"
    assert spoken_reply(history) == ("assistant", "The capital of France is Paris.")
