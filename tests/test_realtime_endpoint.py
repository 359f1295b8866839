"""`/v1/realtime` under a real uvicorn server with fake providers, driven by the stock `openai`
SDK's `client.realtime.connect()`; every server event is validated against the SDK's types."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.exceptions import InvalidStatus

from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from voice_fsm.app import create_app
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.providers import Pipeline
from voice_fsm.service_settings import AuthSettings
from voice_fsm.settings import Settings

from session_harness import fake_pipeline, make_settings
from support.in_process import serving_app

pytestmark = pytest.mark.integration

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
TIMEOUT = 5.0
MODEL = "gpt-realtime"


class Realtime:
    """One SDK connection, and every event it received, each validated strictly."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection
        self.events: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv_bytes(), TIMEOUT)
        data = json.loads(raw)
        SERVER_EVENT.validate_python(data)  # the SDK's own model of the event, strictly
        parsed = self.connection.parse_event(raw)
        assert parsed.type == data["type"]
        self.events.append(data)
        return data

    async def until(self, kind: str) -> list[dict[str, Any]]:
        seen = []
        while True:
            event = await self.next()
            seen.append(event)
            if event["type"] == kind:
                return seen

    async def created(self) -> dict[str, Any]:
        """`session.created`, then `conversation.created` as OpenAI sends it right after."""
        created = await self.next()
        assert created["type"] == "session.created"
        assert (await self.next())["type"] == "conversation.created"
        return created

    async def done(self) -> list[dict[str, Any]]:
        """The events up to `response.done`, then the `rate_limits.updated` that follows it."""
        events = await self.until("response.done")
        assert (await self.next())["type"] == "rate_limits.updated"
        return events

    async def send(self, event: dict[str, Any]) -> None:
        await self.connection.send(event)  # type: ignore[arg-type]

    async def append(self, pcm: bytes) -> None:
        await self.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        )


@asynccontextmanager
async def serving(
    settings: Settings, llm: FakeLanguageModel | None = None, *, pipeline: Pipeline | None = None
) -> AsyncIterator[int]:
    """A real server with quick fake providers (or `pipeline`); its port."""
    pipeline = pipeline or fake_pipeline(
        stt=FakeSpeechToText(delay=0.01),
        llm=llm or FakeLanguageModel(first_token_delay=0.01, token_delay=0.005),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.02),
    )
    app = create_app(settings, pipeline=pipeline)
    async with serving_app(app) as port:
        yield port


@pytest.fixture
def llm() -> FakeLanguageModel:
    return FakeLanguageModel(first_token_delay=0.01, token_delay=0.005)


@pytest.fixture
async def port(llm: FakeLanguageModel) -> AsyncIterator[int]:
    async with serving(make_settings(), llm) as port:
        yield port


def sdk_client(port: int, key: str = "sk-test") -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=key,
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )


@pytest.fixture
async def rt(port: int) -> AsyncIterator[Realtime]:
    async with sdk_client(port).realtime.connect(model=MODEL) as connection:
        yield Realtime(connection)


def speech(ms: int = 400) -> bytes:
    return b"\x10\x00" * (bytes_for_ms(ms) // 2)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


async def manual_session(rt: Realtime, modalities: list[str] | None = None) -> dict[str, Any]:
    await rt.created()
    session: dict[str, Any] = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    session["instructions"] = "Answer briefly."
    if modalities:
        session["output_modalities"] = modalities
    await rt.send({"type": "session.update", "session": session})
    updated = await rt.until("session.updated")
    return updated[-1]


async def commit_a_turn(rt: Realtime) -> list[dict[str, Any]]:
    await rt.append(speech(200))
    await rt.append(speech(200))
    await rt.send({"type": "input_audio_buffer.commit"})
    return await rt.until("conversation.item.input_audio_transcription.completed")


async def test_session_created_then_updated_with_what_the_session_applied(rt: Realtime) -> None:
    created = await rt.next()
    assert created["type"] == "session.created"
    assert created["session"]["type"] == "realtime"
    assert created["session"]["model"] == MODEL
    audio_in = created["session"]["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"] is None  # the client commits until it asks for VAD
    await rt.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Be terse.",
                "output_modalities": ["text"],
                "audio": {"input": {"turn_detection": None}, "output": {"voice": "marin"}},
                "tracing": "auto",  # not applied, so not echoed
            },
        }
    )
    updated = (await rt.until("session.updated"))[-1]["session"]
    assert updated["instructions"] == "Be terse."
    assert updated["output_modalities"] == ["text"]
    assert updated["audio"]["output"]["voice"] == "marin"
    assert updated["audio"]["input"]["turn_detection"] is None
    assert "tracing" not in updated


async def test_a_manual_commit_turn_gives_the_transcript_then_a_spoken_response(
    rt: Realtime,
) -> None:
    await manual_session(rt)
    heard = await commit_a_turn(rt)
    delta = "conversation.item.input_audio_transcription.delta"
    assert [kind for kind in kinds(heard) if kind != delta] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    deltas = [event for event in heard if event["type"] == delta]
    assert "".join(event["delta"] for event in deltas) == heard[-1]["transcript"]
    item_id = heard[0]["item_id"]
    assert {event["item_id"] for event in deltas} == {item_id}
    assert heard[1]["item"]["id"] == item_id
    assert heard[1]["item"]["role"] == "user"
    assert heard[-1]["item_id"] == item_id
    assert heard[-1]["transcript"] == "What is the capital of France?"
    assert heard[-1]["usage"] == {"type": "duration", "seconds": 0.4}

    # No response until the client asks for one.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rt.connection.recv_bytes(), 0.3)
    await rt.send({"type": "response.create"})
    events = await rt.until("response.done")
    names = kinds(events)
    assert names[:4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert names[-6:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    # 24 kHz PCM16: the fake speaks 40 ms a character of the reply
    assert len(audio) == bytes_for_ms(40 * len("The capital of France is Paris."))
    deltas = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    transcript = events[-5]["transcript"]
    assert transcript == deltas == "The capital of France is Paris."
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
    assert done["output_modalities"] == ["audio"]
    assert {e.get("response_id") for e in events[1:-2]} - {None} == {done["id"]}


async def test_a_text_only_response_has_text_deltas_and_no_audio(rt: Realtime) -> None:
    await manual_session(rt, modalities=["text"])
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    events = await rt.until("response.done")
    names = kinds(events)
    assert "response.output_audio.delta" not in names
    assert "response.output_audio_transcript.delta" not in names
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "The capital of France is Paris."
    assert [e["text"] for e in events if e["type"] == "response.output_text.done"] == [text]
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["output_modalities"] == ["text"]


async def test_one_response_in_text_in_an_audio_session(rt: Realtime) -> None:
    await manual_session(rt)
    await commit_a_turn(rt)
    await rt.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = await rt.until("response.done")
    assert "response.output_audio.delta" not in kinds(events)
    assert "response.output_text.done" in kinds(events)


async def test_response_cancel_mid_reply_ends_it_cancelled_with_no_later_audio(
    rt: Realtime,
) -> None:
    await manual_session(rt)
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    while (await rt.next())["type"] != "response.output_audio.delta":
        pass
    await rt.send({"type": "response.cancel"})
    events = await rt.done()
    assert events[-1]["response"]["status"] == "cancelled"
    assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    spoken = events[-1]["response"]["output"][0]["content"][0]["transcript"]
    assert "The capital of France is Paris.".startswith(spoken)
    # Nothing more of that response: no event for a while, then the answer to a new request.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rt.connection.recv_bytes(), 0.3)
    await rt.send({"type": "input_audio_buffer.clear"})
    assert (await rt.next())["type"] == "input_audio_buffer.cleared"


async def test_unsupported_and_malformed_events_get_errors_and_the_session_goes_on(
    rt: Realtime,
) -> None:
    await manual_session(rt)
    await rt.send({"type": "output_audio_buffer.clear", "event_id": "e1"})  # WebRTC only
    await rt.send({"type": "no.such.event", "event_id": "e2"})
    await rt.connection.send_raw("{not json")
    await rt.send({"type": "input_audio_buffer.append", "audio": "***", "event_id": "e4"})
    await rt.send({"type": "input_audio_buffer.commit", "event_id": "e5"})  # nothing appended
    await rt.send({"type": "response.cancel", "event_id": "e6"})  # nothing to cancel
    errors = [await rt.next() for _ in range(6)]
    assert kinds(errors) == ["error"] * 6
    codes = [(e["error"]["code"], e["error"].get("event_id")) for e in errors]
    assert codes == [
        ("unsupported_event", "e1"),
        ("invalid_value", "e2"),
        ("invalid_json", None),
        ("invalid_value", "e4"),
        ("input_audio_buffer_commit_empty", "e5"),
        ("response_cancel_not_active", "e6"),
    ]
    assert errors[1]["error"]["param"] == "type"
    assert all(e["error"]["type"] == "invalid_request_error" for e in errors)
    heard = await commit_a_turn(rt)
    assert heard[-1]["transcript"] == "What is the capital of France?"
    await rt.send({"type": "response.create"})
    assert (await rt.until("response.done"))[-1]["response"]["status"] == "completed"


async def test_with_api_keys_the_sdk_needs_one_of_them() -> None:
    auth = AuthSettings(api_keys=["sk-voice-right-0123456789"])  # type: ignore[arg-type]
    settings = make_settings().model_copy(update={"auth": auth})
    async with serving(settings) as port:
        with pytest.raises(InvalidStatus) as refused:
            async with sdk_client(port, "sk-voice-wrong-0123456789").realtime.connect(model=MODEL):
                pass
        assert refused.value.response.status_code == 401
        async with sdk_client(port, "sk-voice-right-0123456789").realtime.connect(
            model=MODEL
        ) as conn:
            assert (await Realtime(conn).next())["type"] == "session.created"


def asked(llm: FakeLanguageModel) -> list[list[tuple[str, str]]]:
    """Each request the language model had: its messages as (role, text)."""
    return [[(m.role, m.content) for m in call] for call in llm.ledger.calls]


async def test_response_create_right_after_commit_answers_that_turn(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    await rt.append(speech(300))
    await rt.send({"type": "input_audio_buffer.commit"})
    await rt.send({"type": "response.create"})  # while the commit is being transcribed
    events = await rt.until("response.done")
    names = kinds(events)
    assert names.index("conversation.item.input_audio_transcription.completed") < names.index(
        "response.created"
    )
    assert events[-1]["response"]["status"] == "completed"
    assert asked(llm)[-1][-1] == ("user", "What is the capital of France?")


async def test_two_commits_then_one_response_sees_both_user_messages(
    rt: Realtime, llm: FakeLanguageModel
) -> None:
    await manual_session(rt)
    first = await commit_a_turn(rt)
    second = await commit_a_turn(rt)
    assert second[0]["previous_item_id"] == first[0]["item_id"]
    await rt.send({"type": "response.create"})
    assert (await rt.until("response.done"))[-1]["response"]["status"] == "completed"
    question = ("user", "What is the capital of France?")
    assert asked(llm) == [[("system", "Answer briefly."), question, question]]
    # A response with no new user message: the history as it stands, the reply in it.
    await rt.send({"type": "response.create"})
    assert (await rt.until("response.done"))[-1]["response"]["status"] == "completed"
    answer = ("assistant", "The capital of France is Paris.")
    assert asked(llm)[-1] == [("system", "Answer briefly."), question, question, answer]


async def test_a_response_while_one_is_in_flight_is_refused(rt: Realtime) -> None:
    await manual_session(rt)
    await commit_a_turn(rt)
    await rt.send({"type": "response.create"})
    await rt.until("response.created")
    await rt.send({"type": "response.create", "event_id": "again"})
    events = await rt.until("response.done")
    errors = [event for event in events if event["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["error"]["code"] == "invalid-state"
    assert events[-1]["response"]["status"] == "completed"


async def test_a_provider_failure_ends_the_response_failed_with_our_typed_error() -> None:
    timeout = ProviderError(ErrorCode.PROVIDER_TIMEOUT, "The model timed out.", stage=Stage.LLM)
    failing = FakeLanguageModel(first_token_delay=0.01, fail=timeout, fail_after_tokens=2)
    async with (
        serving(make_settings(), failing) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        rt = Realtime(connection)
        await manual_session(rt)
        await commit_a_turn(rt)
        await rt.send({"type": "response.create"})
        events = await rt.until("response.done")
        errors = [event["error"] for event in events if event["type"] == "error"]
        assert errors == [
            {
                "type": "server_error",
                "code": "provider-timeout",
                "message": "The model timed out.",
            }
        ]
        done = events[-1]["response"]
        assert done["status"] == "failed"
        assert done["status_details"]["error"] == {
            "type": "server_error",
            "code": "provider-timeout",
        }
        # The session goes on.
        await commit_a_turn(rt)
