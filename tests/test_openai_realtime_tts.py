"""OpenAIRealtimeTextToSpeech against the fake Realtime server on a loopback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import pytest
from structlog.testing import capture_logs

from voice_fsm import provider_requests
from voice_fsm.adapters.base import TextToSpeech
from voice_fsm.adapters.openai import speech_fidelity
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.realtime_tts import VERBATIM, OpenAIRealtimeTextToSpeech
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.testing.fake_openai import speech_pcm
from voice_fsm.testing.fake_realtime import (
    FakeRealtimeConfig,
    RecordedEvent,
)

from support.openai_wire import openai_settings
from support.servers import eventually, free_port

KEY = "sk-proj-speak0123456789abcdef"
TEXT = "The capital of France is Paris."


@pytest.fixture
def fake(realtime_server: tuple[FakeRealtimeConfig, str]) -> FakeRealtimeConfig:
    realtime_server[0].reset(api_key=KEY, tts_first_audio_delay=0.0, tts_chunk_delay=0.0)
    return realtime_server[0]


@pytest.fixture
async def make_tts(
    realtime_server: tuple[FakeRealtimeConfig, str], fake: FakeRealtimeConfig
) -> AsyncIterator[Callable[..., OpenAIRealtimeTextToSpeech]]:
    made: list[OpenAIRealtimeTextToSpeech] = []

    def make(base_url: str | None = None, key: str = KEY, **tts: Any) -> OpenAIRealtimeTextToSpeech:
        tts.setdefault("timeout", 2.0)
        settings = openai_settings("tts", base_url=base_url or realtime_server[1], key=key, **tts)
        client = make_openai_client(settings, settings.tts)
        adapter = OpenAIRealtimeTextToSpeech(settings.tts, client, settings.secrets())
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.aclose()


async def speak(tts: OpenAIRealtimeTextToSpeech, text: str = TEXT, **kw: Any) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text, **kw)]


async def speak_on(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


def recorded(fake: FakeRealtimeConfig, type_: str) -> list[RecordedEvent]:
    """The events of `type_` either way, with their connection and time."""
    return [event for event in list(fake.events) if event.type == type_]


async def started(tts: OpenAIRealtimeTextToSpeech, fake: FakeRealtimeConfig) -> None:
    """`tts.start()`, and wait until its session is configured."""
    await tts.start()
    await eventually(lambda: fake.sent("session.updated"))


async def test_yields_the_fakes_tone_in_several_chunks(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    tts = make_tts()
    assert isinstance(tts, TextToSpeech)
    chunks = await speak(tts)
    assert b"".join(chunks) == speech_pcm(TEXT)
    assert len(chunks) == len(fake.sent("response.output_audio.delta")) > 5
    assert all(len(chunk) == fake.tts_chunk_bytes for chunk in chunks[:-1])


async def test_the_response_is_noted_for_the_turns_log(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    requests = provider_requests.collect()
    await speak(make_tts())
    await speak(make_tts(), "And a second sentence.")
    ids = [event["response"]["id"] for event in fake.sent("response.created")]
    assert requests == [{"stage": "tts", "id": response_id} for response_id in ids]
    assert len(set(ids)) == 2


async def test_what_it_sends(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    await speak(make_tts(instructions="Cheerful."), voice="marin")
    assert fake.connections[0].query == {"model": "gpt-realtime-2.1-mini"}
    assert fake.connections[0].headers["authorization"] == f"Bearer {KEY}"
    update, create = fake.received(connection=0)
    assert create.pop("event_id").startswith("tts_")  # what an error about it would name
    assert update == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
        },
    }
    assert create == {
        "type": "response.create",
        "response": {
            "conversation": "none",
            "output_modalities": ["audio"],
            "instructions": f"{VERBATIM} How to speak: Cheerful.",
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": TEXT}],
                }
            ],
        },
    }


@pytest.mark.parametrize(
    ("configured", "used"),
    [
        ("gpt-4o-mini-tts", "gpt-realtime-2.1-mini"),
        ("tts-1-hd", "gpt-realtime-2.1-mini"),
        ("gpt-realtime-2.1", "gpt-realtime-2.1"),
    ],
)
async def test_the_model(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech],
    fake: FakeRealtimeConfig,
    configured: str,
    used: str,
) -> None:
    tts = make_tts(model=configured, speed=2.0)
    assert (tts.provider, tts.model) == ("openai-realtime", used)
    await speak(tts, "Hi.")
    assert fake.connections[0].query == {"model": used}
    output = fake.received("session.update")[0]["session"]["audio"]["output"]
    assert output["speed"] == 1.5  # the Realtime API's fastest


async def test_closing_the_generator_cancels_the_response(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.tts_chunk_delay = 0.05
    tts = make_tts()
    async with aclosing(tts.synthesize(TEXT)) as stream:
        first = await anext(stream)
    assert first == speech_pcm(TEXT)[: fake.tts_chunk_bytes]
    await eventually(lambda: fake.sent("response.done"))
    (cancel,) = fake.received("response.cancel")
    assert cancel["response_id"] == fake.sent("response.created")[0]["response"]["id"]
    assert fake.sent("response.done")[0]["response"]["status"] == "cancelled"
    assert not fake.sent("response.output_audio.done")
    await tts.aclose()  # the sessions kept for later, and their tasks
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def test_cancelling_the_task_cancels_the_response(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.tts_chunk_delay = 0.05
    received: list[bytes] = []

    async def play() -> None:
        async with aclosing(make_tts().synthesize(TEXT)) as stream:
            async for chunk in stream:
                received.append(chunk)

    task = asyncio.create_task(play())
    await eventually(lambda: received)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: fake.received("response.cancel"))
    assert len(received) < 5


async def test_a_complete_response_is_not_cancelled(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    await speak(make_tts(), "Hi.")
    assert not fake.received("response.cancel")


async def test_empty_text_opens_no_connection(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    assert await speak(make_tts(), "  ") == []
    assert fake.connections == []


async def test_an_error_event_is_a_provider_error(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.errors["response.create"] = {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "The text is too long.",
    }
    with pytest.raises(ProviderError) as caught:
        await speak(make_tts())
    assert (caught.value.code, caught.value.stage) == (ErrorCode.PROVIDER_ERROR, Stage.TTS)
    assert caught.value.message == (
        "OpenAI text-to-speech failed: The text is too long. (invalid_value)"
    )


async def test_a_speech_api_only_voice_is_refused(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    with pytest.raises(ProviderError, match="Invalid value: 'nova'"):
        await speak(make_tts(), voice="nova")


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, ErrorCode.PROVIDER_AUTH), (429, ErrorCode.PROVIDER_RATE_LIMITED)],
)
async def test_refused_handshakes(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech],
    fake: FakeRealtimeConfig,
    status: int,
    code: ErrorCode,
) -> None:
    fake.handshake_status = status
    with pytest.raises(ProviderError) as caught:
        await speak(make_tts())
    assert (caught.value.code, caught.value.stage) == (code, Stage.TTS)


async def test_a_wrong_key_is_provider_auth_without_the_key(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    wrong = "sk-proj-wrongKEY9876543210zyx"
    with pytest.raises(ProviderError) as caught:
        await speak(make_tts(key=wrong))
    assert caught.value.code == ErrorCode.PROVIDER_AUTH
    assert wrong not in caught.value.message
    assert wrong[-4:] not in caught.value.message


async def test_connection_refused_is_provider_unavailable(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech],
) -> None:
    with pytest.raises(ProviderError) as caught:
        await speak(make_tts(base_url=f"http://127.0.0.1:{free_port()}/v1"))
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_no_audio_in_time_is_a_timeout(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.tts_first_audio_delay = 5.0
    with pytest.raises(ProviderError) as caught:
        await speak(make_tts(timeout=0.2))
    assert caught.value.code == ErrorCode.PROVIDER_TIMEOUT
    await eventually(lambda: fake.received("response.cancel"))


# ------------------------------------------------------------ sessions kept open


async def test_sentences_in_a_row_share_one_ready_session(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.session_delay = 0.3  # accept -> session.created, as a slow handshake
    tts = make_tts()
    await speak(tts, "First sentence.")
    asked = time.monotonic()
    assert b"".join(await speak(tts, "Second sentence.")) == speech_pcm("Second sentence.")
    first, second = recorded(fake, "response.create")
    assert first.connection == second.connection
    # Its session was configured before the second sentence was asked for: no handshake (and
    # none of the fake's 0.3 s) stood between the request and its audio.
    (updated,) = [e for e in recorded(fake, "session.updated") if e.connection == first.connection]
    assert updated.at < asked < second.at
    # The only other connection is the spare, opened while the first sentence was spoken.
    await eventually(lambda: len(fake.sent("session.updated")) == 2)
    assert len(fake.connections) == 2
    assert len(fake.received("response.create")) == 2


async def test_start_opens_the_first_sentences_session(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.session_delay = 0.3
    tts = make_tts(speed=1.2)
    await started(tts, fake)
    assert fake.received("session.update") == [
        {"type": "session.update", "session": tts.session("alloy")}
    ]
    asked = time.monotonic()
    assert b"".join(await speak(tts)) == speech_pcm(TEXT)
    (create,) = recorded(fake, "response.create")
    assert create.connection == 0
    assert recorded(fake, "session.updated")[0].at < asked < create.at


async def test_a_failed_warm_up_is_logged_and_the_sentence_opens_its_own(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.handshake_status = 503
    with capture_logs() as logs:
        tts = make_tts()
        await tts.start()
        await eventually(lambda: logs)
    (log,) = logs
    assert (log["event"], log["log_level"]) == ("realtime.session_open_failed", "warning")
    assert "refused the WebSocket connection with HTTP 503" in log["error"]
    fake.handshake_status = None
    assert b"".join(await speak(tts)) == speech_pcm(TEXT)


async def test_concurrent_sentences_each_get_a_session(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.tts_chunk_delay = 0.01
    tts = make_tts()
    await started(tts, fake)
    texts = ["One.", "Two, the second.", "And the third one."]
    spoken = await asyncio.gather(*(speak(tts, text) for text in texts))
    assert [b"".join(chunks) for chunks in spoken] == [speech_pcm(text) for text in texts]
    assert len({event.connection for event in recorded(fake, "response.create")}) == 3
    assert not fake.sent("error")


async def test_a_kept_session_the_server_ends_is_replaced(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.session_max_duration = 0.5
    tts = make_tts()
    await speak(tts, "Hi.")
    await eventually(lambda: {0, 1} <= set(fake.closed))  # the session and the spare, expired
    assert b"".join(await speak(tts)) == speech_pcm(TEXT)
    # Spoken on a new session (on the second try, if it took an ended one before it noticed).
    assert recorded(fake, "response.create")[-1].connection > 1


async def test_a_kept_session_that_hangs_up_is_replaced_for_the_sentence(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    tts = make_tts()
    await started(tts, fake)
    fake.hang_up_on["response.create"] = 1
    with capture_logs() as logs:
        assert b"".join(await speak(tts)) == speech_pcm(TEXT)
    first, second = recorded(fake, "response.create")
    assert (first.connection, second.connection) == (0, 1)  # a new one, not another kept one
    assert len(fake.sent("response.created")) == 1
    assert [log["event"] for log in logs] == ["tts.session_lost"]


async def test_a_refused_request_is_not_asked_again(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    tts = make_tts()
    await started(tts, fake)
    fake.errors["response.create"] = {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "The text is too long.",
    }
    with pytest.raises(ProviderError, match="The text is too long"):
        await speak(tts)
    assert len(fake.received("response.create")) == 1


async def test_a_session_that_ends_mid_sentence_is_an_error(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.session_max_duration = 0.5
    fake.tts_chunk_delay = 0.05
    tts = make_tts()
    await started(tts, fake)
    received: list[bytes] = []

    async def listen() -> None:
        async for chunk in tts.synthesize(" ".join([TEXT] * 4)):
            received.append(chunk)

    with pytest.raises(ProviderError) as caught:
        await listen()
    assert received  # audio was heard: asking again would repeat it
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert "maximum duration" in caught.value.message
    assert len(fake.received("response.create")) == 1


async def test_a_cancelled_response_takes_its_session_with_it(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.tts_chunk_delay = 0.05
    tts = make_tts()
    async with aclosing(tts.synthesize(TEXT)) as stream:
        await anext(stream)
    fake.tts_chunk_delay = 0.0
    assert b"".join(await speak(tts, "Next.")) == speech_pcm("Next.")
    (cancel,) = recorded(fake, "response.cancel")
    first, second = recorded(fake, "response.create")
    assert first.connection == cancel.connection != second.connection
    await eventually(lambda: first.connection in fake.closed)
    assert not fake.sent("error")


async def test_aclose_closes_every_session(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    tts = make_tts()
    await started(tts, fake)
    await asyncio.gather(speak(tts, "One."), speak(tts, "Two."))
    fake.tts_chunk_delay = 0.05
    held = tts.synthesize(" ".join([TEXT] * 4))  # a session in use
    await anext(held)
    assert len(fake.open_connections()) >= 2
    await tts.aclose()
    await eventually(lambda: not fake.open_connections())
    with pytest.raises(ProviderError):
        await speak_on(held)
    await held.aclose()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


async def test_a_verbatim_read_is_kept_and_not_counted(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    speech_fidelity.reset_counts()
    tts = make_tts()
    with capture_logs() as logs:
        await speak(tts)
    assert tts.last_transcript == TEXT
    assert speech_fidelity.counts() == {"checked": 1, "diverged": 0}
    assert not [log for log in logs if log["event"] == "tts.diverged"]


async def test_a_paraphrase_is_logged_and_counted_while_its_audio_still_plays(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    answer = "Paris is indeed the capital, and a lovely city to visit in spring. " * 6
    fake.paraphrase = lambda text: answer
    speech_fidelity.reset_counts()
    seen: list[speech_fidelity.Divergence] = []
    remove = speech_fidelity.add_listener(seen.append)
    tts = make_tts()
    try:
        with capture_logs() as logs:
            chunks = await speak(tts)
    finally:
        remove()
    assert b"".join(chunks) == speech_pcm(answer)  # the audio is not held back or cut
    assert tts.last_transcript == answer
    assert speech_fidelity.counts() == {"checked": 1, "diverged": 1}
    [log] = [log for log in logs if log["event"] == "tts.diverged"]
    assert log["log_level"] == "warning"
    assert log["sent"] == TEXT
    assert log["spoken"].startswith("Paris is indeed")
    assert len(log["spoken"]) <= 200
    assert log["word_error_rate"] > 0.2
    assert [(d.sent, d.spoken) for d in seen] == [(TEXT, answer)]


async def test_the_divergence_log_keeps_the_key_out(
    make_tts: Callable[..., OpenAIRealtimeTextToSpeech], fake: FakeRealtimeConfig
) -> None:
    fake.paraphrase = lambda text: f"My key is {KEY} and nothing else."
    with capture_logs() as logs:
        await speak(make_tts(), f"Please read {KEY} back.")
    [log] = [log for log in logs if log["event"] == "tts.diverged"]
    assert KEY not in log["sent"]
    assert KEY not in log["spoken"]
