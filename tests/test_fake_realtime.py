"""The fake Realtime server, driven by a plain websockets client (no SDK in between)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from voice_fsm.testing.fake_openai import speech_pcm, words
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

from support.realtime_sdk import sdk_problems
from support.servers import eventually

KEY = "sk-fake-realtime-0123456789"
TRANSCRIPT = "Turn the lights on."
MANUAL = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}


@pytest.fixture
def config(realtime_server: tuple[FakeRealtimeConfig, str]) -> Iterator[FakeRealtimeConfig]:
    """The fake, reset; afterwards, every event it sent in the test is checked against the
    SDK's own models of them (the shapes a client reads)."""
    config = realtime_server[0]
    config.reset(
        transcript=TRANSCRIPT,
        api_key=KEY,
        delta_every_ms=100,
        transcription_delay=0.05,
        tts_first_audio_delay=0.0,
        tts_chunk_delay=0.0,
    )
    yield config
    sent = config.sent()
    assert sent or all(c.refused is not None for c in config.connections)
    problems = {e["type"]: p for e in sent if (p := sdk_problems(e))}
    assert problems == {}


def test_the_sdk_check_catches_a_mismatch() -> None:
    part = {"type": "output_audio", "transcript": ""}
    where = {"response_id": "r", "item_id": "i", "output_index": 0, "content_index": 0}
    event = {"type": "response.content_part.added", "event_id": "e", **where, "part": part}
    assert sdk_problems(event) == ["part.type: Input should be 'text' or 'audio'"]
    assert sdk_problems({**event, "part": {"type": "audio"}}) == []
    assert sdk_problems({**event, "part": {"type": "audio"}, "extra": 1}) == [
        "response.content_part.added.extra"
    ]
    assert sdk_problems({"type": "response.spoken", "event_id": "e"}) != []


@pytest.fixture
def ws_url(realtime_server: tuple[FakeRealtimeConfig, str], config: FakeRealtimeConfig) -> str:
    return realtime_server[1].replace("http://", "ws://") + "/realtime"


@asynccontextmanager
async def session(url: str, query: str, key: str = KEY) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(f"{url}?{query}", additional_headers=headers) as ws:
        yield ws


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


async def receive(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next event of type `kind`; the others are skipped."""
    async with asyncio.timeout(2):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event["type"] == kind:
                return event


def pcm(ms: int, amplitude: float = 0.2) -> bytes:
    """`ms` of a 300 Hz tone at `amplitude` of full scale (0: silence)."""
    t = np.arange(24 * ms) / 24_000
    return (amplitude * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def b64(audio: bytes) -> str:
    return base64.b64encode(audio).decode()


async def test_transcription_session_created_then_updated(ws_url: str) -> None:
    async with session(ws_url, "intent=transcription") as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        await send(ws, "session.update", session=MANUAL)
        updated = await receive(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        assert updated["session"]["audio"]["input"]["format"] == {
            "type": "audio/pcm",
            "rate": 24000,
        }


async def test_deltas_arrive_while_audio_is_appended(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "session.update", session=MANUAL)
        await receive(ws, "session.updated")
        await send(ws, "input_audio_buffer.append", audio=b64(pcm(250)))
        first = await receive(ws, "conversation.item.input_audio_transcription.delta")
        second = await receive(ws, "conversation.item.input_audio_transcription.delta")
        assert first["delta"] + second["delta"] == "Turn the"
        await send(ws, "input_audio_buffer.commit")
        committed = await receive(ws, "input_audio_buffer.committed")
        rest = []
        while (event := json.loads(await ws.recv()))["type"] != (
            "conversation.item.input_audio_transcription.completed"
        ):
            if event["type"].endswith(".delta"):
                rest.append(event["delta"])
    assert "Turn the" + "".join(rest) == TRANSCRIPT
    assert event["transcript"] == TRANSCRIPT
    assert event["item_id"] == committed["item_id"] == first["item_id"]
    assert event["usage"]["type"] == "tokens"
    assert config.appended_audio() == pcm(250)


async def test_bad_input_is_answered_with_error_events(ws_url: str) -> None:
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "input_audio_buffer.append", audio=b64(pcm(20)), event_id="early")
        error = (await receive(ws, "error"))["error"]
        assert (error["code"], error["event_id"]) == ("session_not_configured", "early")
        await send(ws, "session.update", session=MANUAL)
        await send(ws, "input_audio_buffer.append", audio="not base64!", event_id="bad")
        error = (await receive(ws, "error"))["error"]
        assert (error["code"], error["param"], error["event_id"]) == (
            "invalid_value",
            "audio",
            "bad",
        )
        await send(ws, "input_audio_buffer.commit", event_id="empty")
        error = (await receive(ws, "error"))["error"]
        assert error["code"] == "input_audio_buffer_commit_empty"
        assert error["event_id"] == "empty"


async def test_server_vad_detects_speech_by_energy(ws_url: str) -> None:
    vad = {"type": "server_vad", "prefix_padding_ms": 100, "silence_duration_ms": 200}
    update = {"type": "transcription", "audio": {"input": {"turn_detection": vad}}}
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "session.update", session=update)
        audio = pcm(300, 0.0) + pcm(500) + pcm(400, 0.0)
        await send(ws, "input_audio_buffer.append", audio=b64(audio))
        started = await receive(ws, "input_audio_buffer.speech_started")
        stopped = await receive(ws, "input_audio_buffer.speech_stopped")
        committed = await receive(ws, "input_audio_buffer.committed")
        completed = await receive(ws, "conversation.item.input_audio_transcription.completed")
    assert started["audio_start_ms"] == 200  # speech at 300 ms, less the 100 ms padding
    assert stopped["audio_end_ms"] == 1000  # 200 ms of silence after the speech ends at 800
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert completed["transcript"] == TRANSCRIPT


async def test_wrong_key_is_refused_at_the_handshake(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with session(ws_url, "intent=transcription", key="sk-wrong-key-000000"):
            pass
    assert caught.value.response.status_code == 401
    body = json.loads(caught.value.response.body)
    assert body["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-000000" not in body["error"]["message"]
    assert config.connections[0].refused == 401


async def test_a_session_needs_a_model_or_the_transcription_intent(ws_url: str) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with session(ws_url, "foo=bar"):
            pass
    assert caught.value.response.status_code == 400


async def test_response_create_speaks_the_text_in_chunks(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    text = "Hello there."
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
        created = await receive(ws, "session.created")
        assert created["session"]["model"] == "gpt-realtime-2.1-mini"
        await send(ws, "response.create", response={"conversation": "none", "input": [item]})
        audio, chunks = b"", 0
        while (event := json.loads(await ws.recv()))["type"] != "response.done":
            if event["type"] == "response.output_audio.delta":
                audio, chunks = audio + base64.b64decode(event["delta"]), chunks + 1
    assert audio == speech_pcm(text)
    assert chunks == -(-len(audio) // config.tts_chunk_bytes)
    assert event["response"]["status"] == "completed"
    assert len(words(text)) == event["response"]["usage"]["input_tokens"]


async def test_response_cancel_stops_the_audio(ws_url: str, config: FakeRealtimeConfig) -> None:
    config.tts_chunk_delay = 0.05
    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "x" * 80}],
    }
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
        await send(ws, "response.create", response={"input": [item]})
        response_id = (await receive(ws, "response.created"))["response"]["id"]
        await receive(ws, "response.output_audio.delta")
        await send(ws, "response.cancel", response_id=response_id)
        done = await receive(ws, "response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        await send(ws, "response.cancel", event_id="again")
        assert (await receive(ws, "error"))["error"]["code"] == "response_cancel_not_active"
    assert len(config.sent("response.output_audio.delta")) < 5
    assert not config.sent("response.output_audio.done")


async def test_configured_errors_answer_instead(ws_url: str, config: FakeRealtimeConfig) -> None:
    config.errors["session.update"] = {"type": "server_error", "code": None, "message": "Boom."}
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "session.update", session=MANUAL, event_id="mine")
        error = (await receive(ws, "error"))["error"]
    assert error == {"type": "server_error", "code": None, "message": "Boom.", "event_id": "mine"}
    assert config.received("session.update")[0]["event_id"] == "mine"


def vad_update(**turn_detection: Any) -> dict[str, Any]:
    return {"type": "transcription", "audio": {"input": {"turn_detection": turn_detection}}}


async def items_until(ws: ClientConnection, completed: int) -> list[dict[str, Any]]:
    """Every event up to the `completed`-th transcription.completed."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(3):
        while completed:
            seen.append(json.loads(await ws.recv()))
            if seen[-1]["type"] == "conversation.item.input_audio_transcription.completed":
                completed -= 1
    return seen


async def test_each_utterance_is_one_item_with_its_own_id_and_transcript(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    config.transcripts = ("Hello there.", "How are you?")
    vad = {"type": "server_vad", "prefix_padding_ms": 0, "silence_duration_ms": 200}
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "session.update", session=vad_update(**vad))
        speech = pcm(200, 0.0) + pcm(400) + pcm(400, 0.0)
        await send(ws, "input_audio_buffer.append", audio=b64(speech + speech))
        seen = await items_until(ws, 2)
    by_item: dict[str, list[str]] = {}
    for event in seen:
        if "item_id" in event:
            by_item.setdefault(event["item_id"], []).append(event["type"].rsplit(".", 1)[-1])
    first, second = by_item  # in order of appearance
    for item in (first, second):
        assert [kind for kind in by_item[item] if kind != "delta"] == [
            "speech_started",
            "speech_stopped",
            "committed",
            "completed",
        ]
        assert "delta" in by_item[item]
    completed = [e for e in seen if e["type"].endswith("transcription.completed")]
    assert [(e["item_id"], e["transcript"]) for e in completed] == [
        (first, "Hello there."),
        (second, "How are you?"),
    ]
    starts = [e["audio_start_ms"] for e in seen if e["type"].endswith("speech_started")]
    assert starts == [200, 1200]


async def test_the_threshold_raises_the_bar_for_speech(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    quiet = pcm(300, 0.0) + pcm(400, 0.04) + pcm(300, 0.0)  # RMS 0.028: above 0.02, below 0.036
    for connection, threshold in enumerate((0.5, 0.9)):
        vad = {"type": "server_vad", "threshold": threshold, "silence_duration_ms": 200}
        async with session(ws_url, "intent=transcription") as ws:
            await send(ws, "session.update", session=vad_update(**vad))
            await receive(ws, "session.updated")
            await send(ws, "input_audio_buffer.append", audio=b64(quiet))
            await send(ws, "input_audio_buffer.clear")
            await receive(ws, "input_audio_buffer.cleared")
        started = config.sent("input_audio_buffer.speech_started", connection)
        # Heard at 0.5 from 300 ms less the default 300 ms of padding; not heard at 0.9.
        assert [e["audio_start_ms"] for e in started] == ([0] if threshold == 0.5 else [])


async def test_semantic_vad_waits_a_silence_set_by_its_eagerness(ws_url: str) -> None:
    for eagerness, silence_ms in (("high", 250), ("low", 1000)):
        async with session(ws_url, "intent=transcription") as ws:
            await send(
                ws, "session.update", session=vad_update(type="semantic_vad", eagerness=eagerness)
            )
            updated = await receive(ws, "session.updated")
            assert updated["session"]["audio"]["input"]["turn_detection"] == {
                "type": "semantic_vad",
                "eagerness": eagerness,
            }
            audio = pcm(500, 0.0) + pcm(500) + pcm(1200, 0.0)
            await send(ws, "input_audio_buffer.append", audio=b64(audio))
            started = await receive(ws, "input_audio_buffer.speech_started")
            stopped = await receive(ws, "input_audio_buffer.speech_stopped")
            await receive(ws, "conversation.item.input_audio_transcription.completed")
        assert started["audio_start_ms"] == 200  # a fixed 300 ms of padding
        assert stopped["audio_end_ms"] == 1000 + silence_ms


@pytest.mark.parametrize(
    ("turn_detection", "code", "param"),
    [
        ({"type": "semantic_vad", "threshold": 0.5}, "unknown_parameter", "threshold"),
        ({"type": "server_vad", "eagerness": "low"}, "unknown_parameter", "eagerness"),
        ({"type": "loudness"}, "invalid_value", "type"),
        ({"type": "server_vad", "threshold": 1.5}, "invalid_value", "threshold"),
        ({"type": "server_vad", "silence_duration_ms": -1}, "invalid_value", "silence_duration_ms"),
        ({"type": "semantic_vad", "eagerness": "eager"}, "invalid_value", "eagerness"),
    ],
)
async def test_turn_detection_is_checked_as_openai_does(
    ws_url: str, turn_detection: dict[str, Any], code: str, param: str
) -> None:
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "session.update", session=vad_update(**turn_detection))
        error = (await receive(ws, "error"))["error"]
    assert (error["code"], error["param"]) == (
        code,
        f"session.audio.input.turn_detection.{param}",
    )


async def test_a_connection_can_be_dropped_by_the_server(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    config.drop_after_ms = 300
    async with session(ws_url, "intent=transcription") as ws:
        await send(ws, "session.update", session=MANUAL)
        await receive(ws, "session.updated")
        await send(ws, "input_audio_buffer.append", audio=b64(pcm(400)))
        with pytest.raises(ConnectionClosedError) as caught:
            await read_until_closed(ws)
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1011
    await eventually(lambda: config.closed == [0])


async def read_until_closed(ws: ClientConnection) -> None:
    async with asyncio.timeout(2):
        while True:
            await ws.recv()


def spoken(text: str) -> dict[str, Any]:
    """A ``response.create``'s ``response`` that speaks `text` out of band."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"conversation": "none", "input": [item]}


async def test_responses_run_one_at_a_time_on_a_connection(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    config.tts_chunk_delay = 0.02
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
        await send(ws, "response.create", response=spoken("First one."))
        first = (await receive(ws, "response.created"))["response"]["id"]
        await send(ws, "response.create", response=spoken("Too early."), event_id="early")
        error = (await receive(ws, "error"))["error"]
        assert (error["code"], error["event_id"]) == (
            "conversation_already_has_active_response",
            "early",
        )
        assert first in error["message"]
        assert (await receive(ws, "response.done"))["response"]["id"] == first
        await send(ws, "response.create", response=spoken("Second one."))
        done = await receive(ws, "response.done")
    assert done["response"]["status"] == "completed"
    assert len(config.sent("response.created", connection=0)) == 2
    assert len(config.connections) == 1


async def test_a_voice_that_has_spoken_stays(ws_url: str, config: FakeRealtimeConfig) -> None:
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
        marin = {"type": "realtime", "audio": {"output": {"voice": "marin"}}}
        await send(ws, "session.update", session=marin)
        await receive(ws, "session.updated")  # no audio yet: the voice may change
        await send(ws, "response.create", response=spoken("Hi."))
        await receive(ws, "response.done")
        cedar = {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
        await send(ws, "session.update", session=cedar, event_id="update")
        assert (await receive(ws, "error"))["error"]["code"] == "cannot_update_voice"
        other = {**spoken("Hi."), "audio": {"output": {"voice": "cedar"}}}
        await send(ws, "response.create", response=other, event_id="create")
        error = (await receive(ws, "error"))["error"]
        assert (error["code"], error["event_id"]) == ("cannot_update_voice", "create")
        await send(ws, "session.update", session=marin)  # the same voice is no change
        assert (await receive(ws, "session.updated"))["session"]["audio"]["output"]["voice"] == (
            "marin"
        )


async def test_a_session_ends_after_its_maximum_duration(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    config.session_max_duration = 0.2
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
        created = await receive(ws, "session.created")
        assert created["session"]["expires_at"] - time.time() < 2  # not an hour away
        error = (await receive(ws, "error"))["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "session_expired")
        assert error["message"] == "Your session hit the maximum duration of 0.2 seconds."
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
    await eventually(lambda: config.closed == [0])
    assert config.open_connections() == []


async def test_hang_ups_close_the_connection_instead_of_answering(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    config.hang_up_on["response.create"] = 1
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
        await send(ws, "response.create", response=spoken("Hi."))
        with pytest.raises(ConnectionClosedError) as caught:
            await receive(ws, "response.created")
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1011
    async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:  # only the next one
        await send(ws, "response.create", response=spoken("Hi."))
        assert (await receive(ws, "response.done"))["response"]["status"] == "completed"
    assert config.hang_up_on == {"response.create": 0}
    assert [c.index for c in config.connections] == [0, 1]


async def test_the_transcript_keeps_pace_with_the_audio_and_a_paraphrase_replaces_both(
    ws_url: str, config: FakeRealtimeConfig
) -> None:
    text, said = "Read this sentence out loud.", "Sure! Here is your sentence."

    async def respond() -> list[dict[str, Any]]:
        async with session(ws_url, "model=gpt-realtime-2.1-mini") as ws:
            await send(ws, "response.create", response=spoken(text))
            events = []
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                events.append(event)
            return events

    verbatim = await respond()
    config.paraphrase = lambda asked: said if asked == text else asked
    paraphrased = await respond()
    for events, expected in ((verbatim, text), (paraphrased, said)):
        kinds = [e["type"] for e in events]
        deltas = [e["delta"] for e in events if e["type"].endswith("transcript.delta")]
        audio = [e["delta"] for e in events if e["type"] == "response.output_audio.delta"]
        assert "".join(deltas) == expected
        assert b"".join(map(base64.b64decode, audio)) == speech_pcm(expected)
        assert kinds.index("response.output_audio_transcript.delta") < kinds.index(
            "response.output_audio.delta"
        )
        assert kinds.index("response.output_audio_transcript.done") > max(
            i for i, kind in enumerate(kinds) if kind == "response.output_audio.delta"
        )
        done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert done["transcript"] == expected
