"""``VOICE_FSM_STT__LIVE=auto`` (the default) at a compatible server's base URL: live
transcription through its Realtime endpoint when it has one, else the completed recording,
decided once for the process. The real OpenAI adapters against the fake OpenAI server, with and
without its Realtime endpoint, on one port; fake LLM and speech."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from openai.types.realtime import RealtimeErrorEvent
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from structlog.testing import capture_logs

from voice_fsm.events import InputAudioStart, InputAudioStop
from voice_fsm.providers import Pipeline, build_pipeline
from voice_fsm.settings import FakeSettings, LlmSettings, Settings, SttSettings, TtsSettings
from voice_fsm.testing.fake_openai import FakeOpenAIConfig, running_fake_openai
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.testing.threaded_server import serving_in_thread

from conftest import ClientFactory
from session_harness import Client, kinds

KEY = "sk-live-auto-0000"
UPLOADED = "Transcribed from the upload."
LIVE = "Transcribed while spoken."
START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")

MakePipeline = Callable[[str], tuple[Pipeline, Settings]]


@pytest.fixture
async def make_pipeline() -> AsyncIterator[MakePipeline]:
    """The default speech-to-text settings at `base_url` (live unset: auto)."""
    pipelines: list[Pipeline] = []

    def make(base_url: str) -> tuple[Pipeline, Settings]:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            openai_api_key=SecretStr(KEY),
            openai_base_url=base_url,
            stt=SttSettings(timeout=2.0, max_retries=0),
            llm=LlmSettings(provider="fake"),
            tts=TtsSettings(provider="fake"),
            fake=FakeSettings(llm_first_token_delay=0.0, tts_first_audio_delay=0.0),
        )
        assert settings.stt.live == "auto"
        pipeline = build_pipeline(settings)
        pipelines.append(pipeline)
        return pipeline, settings

    yield make
    for pipeline in pipelines:
        await pipeline.aclose()


@pytest.fixture
def uploads() -> FakeOpenAIConfig:
    return FakeOpenAIConfig(transcript=UPLOADED, stt_delay=0.0, llm_first_token_delay=0.0)


async def turn(client: Client) -> str:
    """One push-to-talk turn of 600 ms; its transcript."""
    await client.send(START)
    await client.until("state", state="recording")
    await client.speak(600)
    await client.send(STOP)
    done = await client.until("turn.metrics")
    assert "error" not in kinds(done), kinds(done)
    return next(item.event.text for item in done if item.kind == "transcript.done")  # type: ignore[union-attr]


async def test_a_server_with_realtime_transcription_transcribes_live(
    make_pipeline: MakePipeline, connect: ClientFactory, uploads: FakeOpenAIConfig
) -> None:
    realtime = FakeRealtimeConfig(transcript=LIVE, delta_every_ms=100, transcription_delay=0.0)
    with running_fake_openai(uploads, realtime=realtime) as base_url:
        client = await connect(*make_pipeline(base_url))
        assert [await turn(client), await turn(client)] == [LIVE, LIVE]

    # Each turn had a Realtime transcription session, and no recording was uploaded.
    assert [c.query.get("intent") for c in realtime.connections] == ["transcription"] * 2
    updates = realtime.received("session.update")
    assert [u["session"]["type"] for u in updates] == ["transcription"] * 2
    assert uploads.received("transcriptions") == []


async def test_a_server_without_it_falls_back_once_for_good(
    make_pipeline: MakePipeline, connect: ClientFactory, uploads: FakeOpenAIConfig
) -> None:
    with running_fake_openai(uploads) as base_url, capture_logs() as logs:
        client = await connect(*make_pipeline(base_url))
        transcripts = [await turn(client) for _ in range(3)]

    assert transcripts == [UPLOADED] * 3  # the first turn too: its recording went up whole
    assert len(uploads.received("transcriptions")) == 3
    (handshake,) = uploads.received("websocket")  # asked once, by the first turn
    assert handshake.fields["intent"] == "transcription"
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    said = warnings[0]["message"]
    assert base_url in said
    assert "no Realtime transcription endpoint" in said
    assert "HTTP 404" in said


def refusing_app(answer: Callable[[WebSocket, dict[str, Any]], Any], count: list[int]) -> Starlette:
    """A server whose /v1/realtime accepts the connection and answers the session.update
    with `answer` (a Realtime server that has no transcription sessions)."""

    async def endpoint(websocket: WebSocket) -> None:
        count.append(1)
        await websocket.accept()
        try:
            update = json.loads(await websocket.receive_text())
            await answer(websocket, update)
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/v1/realtime", endpoint)])


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[int]]]:
    async def unknown_model(websocket: WebSocket, update: dict[str, Any]) -> None:
        error = {
            "type": "error",
            "event_id": "event_1",
            "error": {
                "type": "invalid_request_error",
                "code": "model_not_found",
                "message": "The model 'gpt-live-transcribe' does not exist.",
                "param": "session.audio.input.transcription.model",
                "event_id": update.get("event_id"),
            },
        }
        RealtimeErrorEvent.model_validate(error)  # the GA shape
        await websocket.send_text(json.dumps(error))

    count: list[int] = []
    with serving_in_thread(refusing_app(unknown_model, count), "refusing") as base_url:
        yield base_url, count


async def test_an_error_event_for_the_session_is_an_answer_too(
    refusing_server: tuple[str, list[int]], make_pipeline: MakePipeline
) -> None:
    from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
    from voice_fsm.errors import ProviderError

    base_url, connections = refusing_server
    pipeline, _ = make_pipeline(base_url)
    stt = pipeline.stt
    assert isinstance(stt, OpenAIRealtimeSpeechToText)
    assert stt.live_available
    with pytest.raises(ProviderError, match="does not exist") as refused:
        await stt.start_live()
    assert "no Realtime transcription endpoint" in refused.value.message
    assert not stt.live_available
    assert stt.model == "gpt-transcribe"  # what transcribes its turns now
    with pytest.raises(ProviderError):
        await stt.start_live()
    assert len(connections) == 1  # not asked again


async def test_a_server_that_cannot_be_reached_is_asked_again(
    make_pipeline: MakePipeline,
) -> None:
    from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
    from voice_fsm.errors import ProviderError

    from support.servers import free_port

    pipeline, _ = make_pipeline(f"http://127.0.0.1:{free_port()}/v1")
    stt = pipeline.stt
    assert isinstance(stt, OpenAIRealtimeSpeechToText)
    with pytest.raises(ProviderError, match="Could not reach"):
        await stt.start_live()
    assert stt.live_available  # a host that is down says nothing of its endpoints
