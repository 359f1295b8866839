"""voice-fsm with llama.cpp's own OpenAI-compatible server as its language model: a real
`python -m llama_cpp.server` subprocess (llama-cpp-python) serving Qwen2.5-Coder-0.5B, a real
uvicorn serving voice-fsm with the openai provider at its base URL (speech-to-text and
text-to-speech fake), and a WebSocket client speaking protocol v1.

The server hands back tool calls as the text the model wrote (docs/llama-cpp-server.md says
why); the adapter reads them. `pytest -s` prints the measured figures."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets

from voice_fsm.app import create_app
from voice_fsm.settings import Settings

from support.in_process import serving_app
from support.live_server import report, say, stop, until
from support.llama_server import MODEL_ALIAS, LlamaServer, running_llama_server

pytestmark = pytest.mark.integration

Item = dict[str, Any] | bytes
TURN_S = 60.0  # a 0.5B model on 2 shared cores: seconds, not milliseconds, per round


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with running_llama_server(tmp_path_factory.mktemp("llama")) as server:
        yield server


def settings_for(llama: LlamaServer, transcript: str) -> Settings:
    """What `VOICE_FSM_LLM__PROVIDER=openai VOICE_FSM_LLM__BASE_URL=...` gives, with the fake
    speech-to-text hearing `transcript`, the built-in tools on and greedy decoding."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key=None,
        openai_base_url=None,
        stt={"provider": "fake"},
        tts={"provider": "fake"},
        vad={"provider": "off"},
        llm={
            "provider": "openai",
            "base_url": llama.base_url,
            "api_key": "unused",
            "model": MODEL_ALIAS,
            "reasoning_effort": None,
            "temperature": 0,
            "max_output_tokens": 60,
            "timeout": TURN_S,
            "max_retries": 0,
        },
        tools={"builtins": "on", "timezone": "UTC"},
        fake={
            "transcript": transcript,
            "stt_delay": 0.01,
            "tts_first_audio_delay": 0.01,
            "reply": "The fake language model said this.",
        },
    )


@asynccontextmanager
async def voice_fsm(llama: LlamaServer, transcript: str) -> AsyncIterator[int]:
    """voice-fsm on a real uvicorn with `settings_for`; its port."""
    async with serving_app(create_app(settings_for(llama, transcript))) as port:
        yield port


async def ask(port: int, end: str = "turn.metrics") -> list[Item]:
    """One push-to-talk turn on a new session; what the server sent up to `end`."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created", created
        assert created["llm"] == {"provider": "openai", "model": MODEL_ALIAS}, created["llm"]
        await say(ws)
        await stop(ws)
        return await until(ws, end, TURN_S)


def of(seen: list[Item], kind: str) -> list[dict[str, Any]]:
    return [item for item in seen if isinstance(item, dict) and item["type"] == kind]


def states(seen: list[Item]) -> list[str]:
    return [item["state"] for item in of(seen, "state")]


def audio_bytes(seen: list[Item]) -> int:
    return sum(len(item) for item in seen if isinstance(item, bytes))


async def test_a_spoken_question_gets_a_streamed_answer_from_the_llama_server(
    llama: LlamaServer,
) -> None:
    before = llama.chat_requests()
    async with voice_fsm(llama, "What is the capital of France?") as port:
        started = time.monotonic()
        seen = await ask(port)
    assert not of(seen, "error"), of(seen, "error")
    done = of(seen, "response.done")[0]
    # Not the fake language model's words: the model behind the llama server answered.
    assert "Paris" in done["text"], done
    assert done["text"] != "The fake language model said this."
    deltas = of(seen, "response.delta")
    assert len(deltas) > 1, deltas  # streamed, not one block at the end
    assert "".join(d["text"] for d in deltas) == done["text"]
    assert "acting" not in states(seen)  # the tools were offered and rightly not used
    assert audio_bytes(seen) == of(seen, "audio.done")[0]["bytes"] > 0
    assert llama.chat_requests() == before + 1
    metrics = of(seen, "turn.metrics")[0]
    report(
        "llama.cpp server, plain turn",
        turn_s=round(time.monotonic() - started, 2),
        llm_first_token_ms=metrics.get("llm_first_token_ms"),
        llm_ms=metrics.get("llm_ms"),
        reply=done["text"],
    )


async def test_a_question_for_a_built_in_tool_is_answered_with_its_result(
    llama: LlamaServer,
) -> None:
    # Qwen2.5-Coder-0.5B alone says 17 times 23 is 409; the calculator says 391.
    before = llama.chat_requests()
    async with voice_fsm(llama, "What is 17 times 23?") as port:
        started = time.monotonic()
        seen = await ask(port)
    assert not of(seen, "error"), of(seen, "error")
    assert states(seen).index("acting") < states(seen).index("speaking"), states(seen)
    (call,) = of(seen, "tool.call")
    assert (call["name"], call["runs_on"]) == ("calculator", "server")
    assert json.loads(call["arguments"])["expression"].replace(" ", "") == "17*23"
    (result,) = of(seen, "tool.result")
    assert result["ok"], result
    assert json.loads(result["output"])["result"] == 391
    done = of(seen, "response.done")[0]
    assert "391" in done["text"], done
    # The call's JSON was never spoken or shown as the reply.
    assert "{" not in "".join(d["text"] for d in of(seen, "response.delta"))
    assert audio_bytes(seen) > 0
    assert llama.chat_requests() == before + 2  # the call, then the answer with its result
    report(
        "llama.cpp server, tool turn",
        turn_s=round(time.monotonic() - started, 2),
        tool_ms=result["duration_ms"],
        reply=done["text"],
    )


async def test_a_question_longer_than_the_servers_context_is_an_error_not_silence(
    llama: LlamaServer,
) -> None:
    # Streamed, the server fails such a request with HTTP 200 and an empty body.
    async with voice_fsm(llama, "Say this back: " + "word " * 5000) as port:
        seen = await ask(port, end="error")
    (error,) = of(seen, "error")
    assert (error["stage"], error["code"]) == ("llm", "provider-error"), error
    assert "ended the stream without a word" in error["message"]
    assert not of(seen, "response.delta")
    assert "context window" in llama.log_path.read_text(errors="replace")
