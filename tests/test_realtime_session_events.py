"""`/v1/realtime`'s events about the session rather than one response: `conversation.created`,
`rate_limits.updated`, a transcription that failed, the voice in effect, and `response.cancel`
naming a response. A real server with fake providers, driven by the stock `openai` SDK; every
server event is validated against the SDK's types (`Realtime.next`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from test_realtime_endpoint import (
    MODEL,
    Realtime,
    commit_a_turn,
    kinds,
    manual_session,
    sdk_client,
    serving,
    speech,
)
from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.providers import Pipeline
from voice_fsm.settings import Settings

from session_harness import fake_pipeline, make_settings

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


@asynccontextmanager
async def connected(
    pipeline: Pipeline | None = None, settings: Settings | None = None
) -> AsyncIterator[Realtime]:
    async with (
        serving(settings or make_settings(), pipeline=pipeline) as port,
        sdk_client(port).realtime.connect(model=MODEL) as connection,
    ):
        yield Realtime(connection)


async def test_conversation_created_follows_session_created_with_the_responses_id() -> None:
    async with connected() as rt:
        assert (await rt.next())["type"] == "session.created"
        created = await rt.next()
        assert created["type"] == "conversation.created"
        conversation = created["conversation"]
        assert conversation["object"] == "realtime.conversation"
        assert conversation["id"].startswith("conv_")
        await rt.send({"type": "session.update", "session": {"type": "realtime"}})
        await rt.until("session.updated")
        await commit_a_turn(rt)
        await rt.send({"type": "response.create"})
        events = await rt.done()
        ids = {e["response"]["conversation_id"] for e in events if "response" in e}
        assert ids == {conversation["id"]}
        # Out of band, a response is in no conversation.
        await rt.send({"type": "response.create", "response": {"conversation": "none"}})
        assert "conversation_id" not in (await rt.done())[-1]["response"]


async def test_rate_limits_after_each_response_tell_how_fast_the_client_may_send() -> None:
    """The server reads at most 20 events a second from a connection, 20 at once: a client
    that just sent 60 learns that its burst is spent and how long until it is whole again."""
    async with connected(settings=make_settings(messages_per_s=20.0)) as rt:
        await manual_session(rt)
        await commit_a_turn(rt)
        await rt.send({"type": "response.create"})
        for _ in range(60):  # a burst: read a token at a time, 20 a second
            await rt.append(speech(10))
        await rt.until("response.done")
        limits = await rt.next()
        assert limits["type"] == "rate_limits.updated"
        (requests,) = limits["rate_limits"]
        assert (requests["name"], requests["limit"]) == ("requests", 20)
        assert requests["remaining"] <= 1
        # Spent, or a little in debt: the server is waiting before it reads the next event.
        assert 0.9 <= requests["reset_seconds"] <= 1.1
        # No limit on tokens here, so none is reported.
        assert [limit["name"] for limit in limits["rate_limits"]] == ["requests"]


async def test_a_failed_transcription_names_the_item_and_our_error_then_goes_on() -> None:
    timeout = ProviderError(
        ErrorCode.PROVIDER_TIMEOUT, "Speech-to-text timed out.", stage=Stage.STT
    )
    stt = FakeSpeechToText(delay=0.01, fail=timeout)
    async with connected(fake_pipeline(stt=stt)) as rt:
        await manual_session(rt)
        await rt.append(speech(400))
        await rt.send({"type": "input_audio_buffer.commit"})
        events = await rt.until("conversation.item.input_audio_transcription.failed")
        item_id = events[0]["item_id"]
        assert kinds(events) == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.failed",
        ]
        failed = events[-1]
        assert (failed["item_id"], failed["content_index"]) == (item_id, 0)
        assert failed["error"] == {
            "type": "server_error",
            "code": "provider-timeout",
            "message": "Speech-to-text timed out.",
        }
        error = await rt.next()
        assert (error["type"], error["error"]["code"]) == ("error", "provider-timeout")
        # The provider is back: the next commit is heard and answered.
        stt.fail = None
        heard = await commit_a_turn(rt)
        assert heard[-1]["transcript"] == QUESTION
        assert heard[0]["previous_item_id"] == item_id
        await rt.send({"type": "response.create"})
        assert (await rt.done())[-1]["response"]["status"] == "completed"


class PiperLikeTextToSpeech(FakeTextToSpeech):
    """A stand-in for the embedded engine: provider `local`, one voice whatever is asked."""

    provider = "local"
    model = "piper en_US-test-medium"


async def test_the_embedded_engine_reports_its_own_voice_not_the_one_asked_for() -> None:
    tts = PiperLikeTextToSpeech(first_audio_delay=0.01)
    async with connected(fake_pipeline(tts=tts)) as rt:
        created = await rt.created()
        assert created["session"]["audio"]["output"]["voice"] == "en_US-test-medium"
        update = {"type": "realtime", "audio": {"output": {"voice": "marin"}}}
        await rt.send({"type": "session.update", "session": update})
        updated = (await rt.until("session.updated"))[-1]["session"]
        assert updated["audio"]["output"]["voice"] == "en_US-test-medium"


async def test_a_provider_that_takes_the_voice_reports_and_speaks_the_one_asked_for() -> None:
    tts = FakeTextToSpeech(first_audio_delay=0.01)
    async with connected(fake_pipeline(tts=tts)) as rt:
        created = await rt.created()
        assert created["session"]["audio"]["output"]["voice"] == make_settings().tts.voice
        update = {
            "type": "realtime",
            "audio": {"input": {"turn_detection": None}, "output": {"voice": "marin"}},
        }
        await rt.send({"type": "session.update", "session": update})
        updated = (await rt.until("session.updated"))[-1]["session"]
        assert updated["audio"]["output"]["voice"] == "marin"
        await commit_a_turn(rt)
        await rt.send({"type": "response.create"})
        assert (await rt.done())[-1]["response"]["status"] == "completed"
        assert {voice for _, voice in tts.ledger.calls} == {"marin"}


async def test_response_cancel_naming_another_response_is_refused_and_cancels_nothing() -> None:
    slow = FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.1)  # about 1.3 s of reply
    async with connected(fake_pipeline(llm=FakeLanguageModel(), tts=slow)) as rt:
        await manual_session(rt)
        await commit_a_turn(rt)
        await rt.send({"type": "response.create"})
        response_id = (await rt.until("response.created"))[-1]["response"]["id"]
        cancel: dict[str, Any] = {"type": "response.cancel", "event_id": "c1"}
        await rt.send({**cancel, "response_id": "resp_not_this_one"})
        error = (await rt.until("error"))[-1]["error"]
        assert (error["code"], error["param"], error["event_id"]) == (
            "response_cancel_not_active",
            "response_id",
            "c1",
        )
        assert error["type"] == "invalid_request_error"
        # The one named is cancelled.
        await rt.send({**cancel, "event_id": "c2", "response_id": response_id})
        done = (await rt.done())[-1]["response"]
        assert (done["id"], done["status"]) == (response_id, "cancelled")
        assert done["status_details"]["reason"] == "client_cancelled"
