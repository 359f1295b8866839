"""`/v1/realtime` on the embedded offline engines, with no key: the stock `openai` SDK's
`client.realtime.connect()` asks a question spoken by Piper and gets a spoken answer.

`voice-fsm serve` runs as a user starts it, with no OPENAI_API_KEY, so faster-whisper hears,
a small llama.cpp model (SmolLM2, for speed: its answers are not under test) answers, Piper
speaks, and the embedded Silero detector ends hands-free turns. Every server event is
validated against the SDK's own types.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from voice_fsm.audio import SAMPLE_RATE, bytes_for_ms

from support.local import require_local_engines
from support.servers import clean_env, console_script, free_port, running_server

pytestmark = pytest.mark.integration

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
MODEL = "gpt-realtime"
TIMEOUT = 60.0
"""Seconds for any one event: the first turn loads Whisper and the model."""
QUESTION = "What is the capital of France?"
STEP = bytes_for_ms(100)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    require_local_engines()
    workdir = tmp_path_factory.mktemp("realtime-local")
    port = free_port()
    env = clean_env(VOICE_FSM_LOCAL__LLM_MODEL="smollm2-135m", VOICE_FSM_LOCAL__LLM_MAX_TOKENS="24")
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=workdir,
        log=workdir / "server.log",
        timeout=120,
    ):
        yield port


def test_the_server_runs_the_embedded_engines_with_no_key(port: int) -> None:
    health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
    assert [health[stage]["provider"] for stage in ("stt", "llm", "tts")] == ["local"] * 3
    assert health["llm"]["model"].startswith("SmolLM2-135M")


async def test_the_session_reports_the_piper_voice_it_speaks_with(
    rt: Connection, port: int
) -> None:
    """Piper has one voice: a client asking for another is told the one it will hear."""
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
    model = health["tts"]["model"]
    piper = model.removeprefix("piper ")
    created = await rt.next()
    assert created["type"] == "session.created"
    assert created["session"]["audio"]["output"]["voice"] == piper
    conversation = await rt.next()
    assert conversation["type"] == "conversation.created"
    update = {"type": "realtime", "audio": {"output": {"voice": "marin"}}}
    await rt.send({"type": "session.update", "session": update})
    updated = (await rt.until("session.updated"))[-1]["session"]
    assert updated["audio"]["output"]["voice"] == piper != "marin"


@pytest.fixture(scope="module")
def question() -> bytes:
    from voice_fsm.testing.speech import spoken

    return spoken(QUESTION, lead_s=0.4, total_s=2.5)


class Connection:
    """One SDK connection and the events it received, each validated strictly."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection

    async def next(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv_bytes(), TIMEOUT)
        data: dict[str, Any] = json.loads(raw)
        SERVER_EVENT.validate_python(data)
        assert self.connection.parse_event(raw).type == data["type"]
        assert data["type"] != "error", data
        return data

    async def until(self, kind: str) -> list[dict[str, Any]]:
        seen = [await self.next()]
        while seen[-1]["type"] != kind:
            seen.append(await self.next())
        return seen

    async def send(self, event: dict[str, Any]) -> None:
        await self.connection.send(event)  # type: ignore[arg-type]

    async def stream(self, pcm: bytes) -> None:
        """`pcm` in 100 ms appends, as a live microphone would send it."""
        for offset in range(0, len(pcm), STEP):
            chunk = base64.b64encode(pcm[offset : offset + STEP]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})
            await asyncio.sleep(0.02)

    async def configure(self, turn_detection: dict[str, Any] | None) -> dict[str, Any]:
        created = await self.next()
        assert created["type"] == "session.created"
        session = {
            "type": "realtime",
            "instructions": "Answer in one short sentence.",
            "audio": {"input": {"turn_detection": turn_detection}},
        }
        await self.send({"type": "session.update", "session": session})
        updated: dict[str, Any] = (await self.until("session.updated"))[-1]["session"]
        return updated


@pytest.fixture
async def rt(port: int) -> AsyncIterator[Connection]:
    client = AsyncOpenAI(
        api_key="sk-unused",  # the keyless server asks for none; the SDK wants one
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )
    async with client.realtime.connect(model=MODEL) as connection:
        yield Connection(connection)


def check_spoken_answer(events: list[dict[str, Any]]) -> None:
    """A completed response whose 24 kHz audio deltas and output transcript are the reply."""
    done = events[-1]["response"]
    assert done["status"] == "completed", done
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert len(audio) / 2 / SAMPLE_RATE >= 0.3  # PCM16 at 24 kHz: at least a word
    deltas = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    (transcript,) = [
        e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"
    ]
    assert transcript.strip()
    assert transcript == deltas
    (message,) = [item for item in done["output"] if item["type"] == "message"]
    assert message["content"] == [{"type": "output_audio", "transcript": transcript}]


async def test_a_spoken_question_committed_by_the_client_gets_a_spoken_answer(
    rt: Connection, question: bytes
) -> None:
    updated = await rt.configure(None)
    assert updated["audio"]["input"]["turn_detection"] is None
    assert updated["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    await rt.stream(question)
    await rt.send({"type": "input_audio_buffer.commit"})
    heard = await rt.until("conversation.item.input_audio_transcription.completed")
    assert {"capital", "france"} <= words(heard[-1]["transcript"]), heard[-1]
    await rt.send({"type": "response.create"})
    check_spoken_answer(await rt.until("response.done"))


async def test_a_server_vad_turn_is_detected_by_the_embedded_detector_and_answered(
    rt: Connection, question: bytes
) -> None:
    from voice_fsm.testing.speech import silence

    updated = await rt.configure({"type": "server_vad"})
    assert updated["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    await rt.stream(question + silence(1.5))
    events = await rt.until("response.done")
    names = [event["type"] for event in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.done",
    ]
    assert [names.index(name) for name in order] == sorted(names.index(name) for name in order)
    completed = events[names.index("conversation.item.input_audio_transcription.completed")]
    assert {"capital", "france"} <= words(completed["transcript"]), completed
    check_spoken_answer(events)
