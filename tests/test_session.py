"""The session's state machine, driven with fake adapters as a client would drive it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.fake import (
    FakeLanguageModel,
    FakeLiveSpeechToText,
    FakeSpeechToText,
    FakeTextToSpeech,
)
from voice_fsm.endpoint import parse_text
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.events import (
    ConversationClear,
    InputAudioStart,
    InputAudioStop,
    ResponseCancel,
    SessionConfig,
    SessionUpdate,
)
from voice_fsm.providers import Pipeline
from voice_fsm.session import Session
from voice_fsm.turn_record import LOG_FIELDS, TurnRecord

from conftest import ClientFactory, record_trigger_callers
from session_harness import Client, Received, fake_pipeline, kinds, make_settings

START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")
CANCEL = ResponseCancel(type="response.cancel")

NORMAL_TURN = [
    "state:recording",
    "state:transcribing",
    "transcript.delta",
    "transcript.done",
    "state:thinking",
    "response.delta",
    "state:speaking",
    "audio.start",
    "audio",
    "audio.done",
    "response.done",
    "state:idle",
    "turn.metrics",
]


async def full_turn(client: Client, ms: int = 500) -> list[Received]:
    await client.send(START)
    await client.speak(ms)
    await client.send(STOP)
    return await client.until("turn.metrics")


def error_of(items: list[Received]) -> Any:
    errors = [item.event for item in items if item.kind == "error"]
    assert len(errors) == 1, kinds(items)
    return errors[0]


# ---------------------------------------------------------------- the normal turn


async def test_normal_turn_sends_events_in_order(connect: ClientFactory) -> None:
    pipeline = fake_pipeline()
    client = await connect(pipeline)
    items = await full_turn(client)
    assert kinds(items) == NORMAL_TURN

    transcript = next(i.event for i in items if i.kind == "transcript.done")
    assert transcript.text == "What is the capital of France?"  # type: ignore[union-attr]
    deltas = "".join(i.event.text for i in items if i.kind == "response.delta")  # type: ignore[union-attr]
    assert deltas == "The capital of France is Paris."
    audio = b"".join(i.audio for i in items if i.kind == "audio")
    assert audio == pipeline.tts.audio_for("The capital of France is Paris.")  # type: ignore[attr-defined]
    done = next(i.event for i in items if i.kind == "audio.done")
    assert done.bytes == len(audio)  # type: ignore[union-attr]
    assert all(len(i.audio) % 2 == 0 and len(i.audio) <= 4800 for i in items if i.kind == "audio")

    metrics: Any = items[-1].event
    assert metrics.turn == 1
    assert metrics.audio_in_ms == 480
    for name in ("stt_ms", "llm_first_token_ms", "llm_ms", "tts_first_audio_ms", "tts_ms"):
        assert getattr(metrics, name) >= 0
    assert metrics.voice_to_voice_ms >= metrics.stt_ms + metrics.llm_ms


async def test_states_report_previous_state_and_turn(connect: ClientFactory) -> None:
    client = await connect()
    items = await full_turn(client)
    states = [(i.event.previous, i.event.state, i.event.turn) for i in items if i.kind == "state"]  # type: ignore[union-attr]
    assert states == [
        ("idle", "recording", 1),
        ("recording", "transcribing", 1),
        ("transcribing", "thinking", 1),
        ("thinking", "speaking", 1),
        ("speaking", "idle", 1),
    ]


async def test_history_carries_into_the_next_turn(connect: ClientFactory) -> None:
    llm = FakeLanguageModel("Paris.")
    client = await connect(fake_pipeline(llm=llm))
    await full_turn(client)
    await full_turn(client)
    second = llm.ledger.calls[1]
    assert [(m.role, m.content) for m in second] == [  # type: ignore[attr-defined]
        ("system", make_settings().llm.instructions),
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "What is the capital of France?"),
    ]
    await client.send(ConversationClear(type="conversation.clear"))
    await full_turn(client)
    assert len(llm.ledger.calls[2]) == 2  # type: ignore[arg-type]


async def test_session_update_changes_voice_language_and_instructions(
    connect: ClientFactory,
) -> None:
    pipeline = fake_pipeline()
    client = await connect(pipeline)
    update = SessionConfig(instructions="Be brief.", voice="verse", language="fr")
    await client.send(SessionUpdate(type="session.update", session=update))
    updated: Any = (await client.until("session.updated"))[-1].event
    assert updated.session.voice == "verse"
    assert updated.session.mode == "push_to_talk"
    await full_turn(client)
    assert pipeline.stt.ledger.calls[-1][1] == "fr"  # type: ignore[attr-defined]
    assert pipeline.llm.ledger.calls[-1][0].content == "Be brief."  # type: ignore[attr-defined]
    assert pipeline.tts.ledger.calls[-1][1] == "verse"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- stage failures


def _failing(stage: str, code: ErrorCode) -> Pipeline:
    err = ProviderError(code, f"{stage} broke", stage=Stage(stage))
    return fake_pipeline(
        **{
            "stt": {"stt": FakeSpeechToText(fail=err)},
            "llm": {"llm": FakeLanguageModel(fail=err, fail_after_tokens=2)},
            "tts": {"tts": FakeTextToSpeech(fail=err, fail_after_chunks=1)},
        }[stage]
    )


@pytest.mark.parametrize(
    ("stage", "code", "expected"),
    [
        (
            "stt",
            ErrorCode.PROVIDER_UNAVAILABLE,
            ["state:recording", "state:transcribing", "error:provider-unavailable", "state:idle"],
        ),
        (
            "llm",
            ErrorCode.PROVIDER_RATE_LIMITED,
            [*NORMAL_TURN[:6], "error:provider-rate-limited", "state:idle"],
        ),
        (
            "tts",
            ErrorCode.PROVIDER_AUTH,
            [*NORMAL_TURN[:9], "error:provider-auth", "state:idle"],
        ),
    ],
)
async def test_a_failing_stage_gives_one_error_and_the_next_turn_works(
    connect: ClientFactory, stage: str, code: ErrorCode, expected: list[str]
) -> None:
    pipeline = _failing(stage, code)
    client = await connect(pipeline)
    await client.send(START)
    await client.speak()
    await client.send(STOP)
    items = await client.until("state", state="idle")
    assert kinds(items) == expected
    error = error_of(items)
    assert (error.code, error.stage, error.turn) == (code, stage, 1)
    assert error.retryable == (code != ErrorCode.PROVIDER_AUTH)
    assert await client.quiet() == []

    getattr(pipeline, stage).fail = None
    assert kinds(await full_turn(client)) == NORMAL_TURN


async def test_an_unexpected_exception_is_an_internal_error_not_a_crash(
    connect: ClientFactory,
) -> None:
    llm = FakeLanguageModel()
    client = await connect(fake_pipeline(llm=llm))
    llm.fail = RuntimeError("bug")  # type: ignore[assignment]
    await client.send(START)
    await client.speak()
    await client.send(STOP)
    items = await client.until("state", state="idle")
    error = error_of(items)
    assert (error.code, error.stage) == (ErrorCode.INTERNAL, "server")
    assert "bug" not in error.message
    llm.fail = None
    assert kinds(await full_turn(client)) == NORMAL_TURN


async def test_empty_transcript_is_no_speech(connect: ClientFactory) -> None:
    client = await connect(fake_pipeline(stt=FakeSpeechToText("  ")))
    await client.send(START)
    await client.speak()
    await client.send(STOP)
    items = await client.until("state", state="idle")
    assert kinds(items)[-2:] == ["error:no-speech", "state:idle"]
    assert error_of(items).stage == "stt"


async def test_empty_reply_and_silent_speech_are_provider_errors(connect: ClientFactory) -> None:
    client = await connect(fake_pipeline(llm=FakeLanguageModel("")))
    await client.send(START)
    await client.speak()
    await client.send(STOP)
    error = error_of(await client.until("state", state="idle"))
    assert (error.code, error.stage) == (ErrorCode.PROVIDER_ERROR, "llm")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "Not valid JSON"),
        ('{"type": "input_audio.pause"}', "input_audio.pause"),
        ('{"no_type": 1}', "type"),
        ('{"type": "response.cancel", "played_ms": -5}', "played_ms"),
        ('{"type": "session.update", "session": {"voice": 7}}', "voice"),
        ('{"type": "input_audio.start", "extra": true}', "extra"),
        ("[]", "message"),
    ],
)
async def test_bad_messages_are_invalid_message_and_change_nothing(
    connect: ClientFactory, text: str, needle: str
) -> None:
    client = await connect()
    await client.send(parse_text(text, max_bytes=65536))
    items = await client.until("error")
    error = error_of(items)
    assert (error.code, error.stage, error.turn) == (ErrorCode.INVALID_MESSAGE, "input", 0)
    assert needle in error.message
    assert kinds(items) == ["error:invalid-message"]
    assert kinds(await full_turn(client)) == NORMAL_TURN


async def test_oversized_message_is_refused() -> None:
    text = '{"type":"session.update","session":{"instructions":"' + "x" * 100 + '"}}'
    item = parse_text(text, max_bytes=64)
    assert getattr(item, "code", None) == ErrorCode.INVALID_MESSAGE


async def test_hands_free_is_refused_until_supported(connect: ClientFactory) -> None:
    client = await connect()
    await client.send(
        SessionUpdate(type="session.update", session=SessionConfig(mode="hands_free"))
    )
    assert error_of(await client.until("error")).code == ErrorCode.INVALID_MESSAGE


async def test_commands_that_do_not_fit_the_state_are_invalid_state(
    connect: ClientFactory,
) -> None:
    client = await connect()
    await client.send(STOP)
    assert kinds(await client.until("error")) == ["error:invalid-state"]

    await client.send(START)
    await client.until("state", state="recording")
    await client.send(START)
    assert kinds(await client.until("error")) == ["error:invalid-state"]
    # Still recording: the turn goes on.
    await client.speak()
    await client.send(STOP)
    assert kinds(await client.until("turn.metrics"))[0] == "state:transcribing"


async def test_cancel_while_idle_is_ignored(connect: ClientFactory) -> None:
    client = await connect()
    await client.send(CANCEL)
    assert await client.quiet() == []


async def test_odd_audio_frame_is_dropped_and_recording_goes_on(connect: ClientFactory) -> None:
    stt = FakeSpeechToText()
    client = await connect(fake_pipeline(stt=stt))
    await client.send(START)
    await client.speak(200)
    await client.send(b"\x00\x01\x02")
    items = await client.until("error")
    assert kinds(items) == ["state:recording", "error:invalid-audio"]
    await client.speak(200)
    await client.send(STOP)
    await client.until("turn.metrics")
    assert stt.ledger.calls[-1][0] == 2 * 9600  # the odd frame is not in the recording


async def test_audio_outside_recording_gives_one_error_per_burst(connect: ClientFactory) -> None:
    client = await connect()
    await client.speak(400)
    items = await client.until("error")
    assert error_of(items).code == ErrorCode.INVALID_AUDIO
    assert await client.quiet() == []  # ten frames, one error
    assert kinds(await full_turn(client)) == NORMAL_TURN
    await client.speak(400)
    assert kinds(await client.until("error")) == ["error:invalid-audio"]


async def test_stop_with_too_little_audio_is_no_audio(connect: ClientFactory) -> None:
    client = await connect()
    await client.send(START)
    await client.speak(80)
    await client.send(STOP)
    items = await client.until("state", state="idle")
    assert kinds(items) == ["state:recording", "error:no-audio", "state:idle"]
    assert "80 ms" in error_of(items).message
    assert kinds(await full_turn(client)) == NORMAL_TURN


async def test_recording_over_the_limit_is_audio_too_long(connect: ClientFactory) -> None:
    client = await connect(settings=make_settings(max_audio_seconds=0.5))
    await client.send(START)
    await client.speak(1000)
    await client.send(STOP)
    items = await client.until("state", state="idle")
    assert kinds(items) == ["state:recording", "error:audio-too-long", "state:idle"]
    # The rest of that recording and its stop are dropped quietly.
    assert await client.quiet() == []
    assert kinds(await full_turn(client, ms=400)) == NORMAL_TURN


# ---------------------------------------------------------------- cancel and barge-in


async def _reach(client: Client, state: str) -> None:
    await client.send(START)
    if state == "recording":
        await client.until("state", state="recording")
        return
    await client.speak()
    await client.send(STOP)
    await client.until("state", state=state)


def _slow_pipeline() -> Pipeline:
    return fake_pipeline(
        stt=FakeSpeechToText(delay=0.15),
        llm=FakeLanguageModel(first_token_delay=0.05, token_delay=0.04),
        tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.03),
    )


@pytest.mark.parametrize("state", ["recording", "transcribing", "thinking", "speaking"])
async def test_cancel_from_each_busy_state_returns_to_idle(
    connect: ClientFactory, state: str
) -> None:
    pipeline = _slow_pipeline()
    client = await connect(pipeline)
    await _reach(client, state)
    await client.send(CANCEL)
    items = await client.until("state", state="idle")
    assert items[-1].event.previous == state  # type: ignore[union-attr]
    assert "error" not in kinds(items)
    for adapter in (pipeline.stt, pipeline.llm, pipeline.tts):
        assert adapter.ledger.open == 0  # type: ignore[attr-defined]
    assert await client.quiet(0.2) == []
    assert kinds(await full_turn(client)) == NORMAL_TURN


async def test_cancel_mid_speech_sends_no_audio_after_the_acknowledgement(
    connect: ClientFactory,
) -> None:
    pipeline = _slow_pipeline()
    client = await connect(pipeline)
    await _reach(client, "speaking")
    await client.until("audio")
    await client.send(ResponseCancel(type="response.cancel", played_ms=30))
    items = await client.until("state", state="idle")
    tail = kinds(items)
    assert tail[-3:] == ["audio.done", "response.done", "state:idle"]
    done: Any = next(i.event for i in items if i.kind == "response.done")
    assert done.interrupted is True
    after = await client.quiet(0.3)
    assert [i.kind for i in after] == []  # no audio, no metrics of the cancelled turn
    assert pipeline.tts.ledger.open == 0  # type: ignore[attr-defined]
    # What was said stays in the history; the next turn sees it.
    await full_turn(client)
    history = pipeline.llm.ledger.calls[-1]  # type: ignore[attr-defined]
    assert [m.role for m in history] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize("state", ["transcribing", "thinking", "speaking"])
async def test_barge_in_cancels_the_reply_and_records_again(
    connect: ClientFactory, state: str
) -> None:
    pipeline = _slow_pipeline()
    client = await connect(pipeline)
    await _reach(client, state)
    if state == "speaking":
        await client.until("audio")
    await client.send(START)
    items = await client.until("state", state="recording")
    last: Any = items[-1].event
    assert (last.previous, last.turn) == (state, 2)
    if state == "speaking":
        assert kinds(items)[-3:] == ["audio.done", "response.done", "state:recording"]
    assert "error" not in kinds(items)
    assert pipeline.stt.ledger.open == pipeline.llm.ledger.open == pipeline.tts.ledger.open == 0  # type: ignore[attr-defined]
    assert await client.quiet(0.2) == []
    await client.speak()
    await client.send(STOP)
    assert kinds(await client.until("turn.metrics"))[-1] == "turn.metrics"


# ---------------------------------------------------------------- the driver task


async def test_only_the_driver_moves_the_machine() -> None:
    # The `connect` fixture checks this for every session test when it closes the session;
    # here a whole turn, and the check itself catching a trigger fired elsewhere.
    holder: list[Client] = []

    async def send(event: Any) -> None:
        await holder[0].receive(event)

    session = Session(fake_pipeline(), make_settings(), send)
    client = Client(session)
    holder.append(client)
    fired_by: list[asyncio.Task[Any] | None] = []
    record_trigger_callers(session, fired_by)
    driver = asyncio.create_task(session.run())
    try:
        await client.send(START)
        await client.speak()
        await client.send(STOP)
        await client.until("turn.metrics")
        assert len(fired_by) == 5  # start, stop, transcribed, replied, spoken
        assert set(fired_by) == {driver}

        async def elsewhere() -> None:
            await session.machine.events["start"].trigger(session)

        await asyncio.create_task(elsewhere())
        assert fired_by[-1] is not driver
    finally:
        driver.cancel()
        await asyncio.gather(driver, return_exceptions=True)


async def test_cancelling_the_driver_stops_the_turn_and_its_streams() -> None:
    pipeline = _slow_pipeline()
    holder: list[Client] = []

    async def send(event: Any) -> None:
        await holder[0].receive(event)

    session = Session(pipeline, make_settings(), send)
    client = Client(session)
    holder.append(client)
    driver = asyncio.create_task(session.run())
    await client.until("session.created")
    await _reach(client, "speaking")
    stage_task = session._stage.task
    assert stage_task is not None
    assert not stage_task.done()

    sent_before = len(client.log)
    driver.cancel()
    await asyncio.gather(driver, return_exceptions=True)
    assert driver.cancelled()
    assert stage_task.done()
    assert pipeline.tts.ledger.open == 0  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)
    assert client.log[sent_before:] == []


async def test_every_turn_logs_one_turn_completed_line(connect: ClientFactory) -> None:
    from structlog.testing import capture_logs

    records: list[TurnRecord] = []

    class Recorder:
        def turn_ended(self, record: TurnRecord) -> None:
            records.append(record)

    with capture_logs() as logs:
        client = await connect(_slow_pipeline(), observers=[Recorder()])
        await full_turn(client)  # 1: ok
        await _reach(client, "transcribing")  # 2: interrupted by the barge-in of 3
        await client.send(START)
        await client.until("state", state="recording")
        await client.send(CANCEL)  # 3: cancelled while recording
        await client.until("state", state="idle")
        await _reach(client, "thinking")  # 4: cancelled while thinking
        await client.send(CANCEL)
        await client.until("state", state="idle")
    lines = [(e["turn"], e["outcome"]) for e in logs if e["event"] == "turn.completed"]
    assert lines == [(1, "ok"), (2, "interrupted"), (3, "cancelled"), (4, "cancelled")]
    ok = next(e for e in logs if e["event"] == "turn.completed")
    assert ok["session_id"] == client.session.id
    assert ok["voice_to_voice_ms"] > 0
    assert ok["mode"] == "push_to_talk"
    assert ok["providers"] == {"stt": "fake", "llm": "fake", "tts": "fake"}
    # The observers get the record the line was written from, field for field.
    assert [(r.turn, r.outcome) for r in records] == lines
    completed = [e for e in logs if e["event"] == "turn.completed"]
    for record, line in zip(records, completed, strict=True):
        assert {k: line[k] for k in record.log_fields()} == record.log_fields()
        # Every field is documented (docs/observability.md is generated from LOG_FIELDS).
        assert set(line) - {"log_level"} <= set(LOG_FIELDS)
    assert records[0].marks["stop"] < records[0].marks["llm.first_token"]


async def test_a_failing_observer_costs_no_turn(connect: ClientFactory) -> None:
    class Broken:
        def turn_ended(self, record: TurnRecord) -> None:
            raise RuntimeError("bug in an observer")

    client = await connect(observers=[Broken()])
    await full_turn(client)
    items = await full_turn(client)
    assert "response.done" in [i.kind for i in items]


# ---------------------------------------------------------------- speech pipelined with the reply

LONG_REPLY = "Paris is the capital. It sits on the Seine. About two million people live there."


async def test_the_first_audio_goes_out_before_the_language_model_finishes(
    connect: ClientFactory,
) -> None:
    tts = FakeTextToSpeech(chunk_delay=0.0)
    llm = FakeLanguageModel(LONG_REPLY, first_token_delay=0.01, token_delay=0.03)
    client = await connect(fake_pipeline(llm=llm, tts=tts))
    items = await full_turn(client)
    order = [i.kind for i in items]
    first_audio = order.index("audio")
    last_delta = len(order) - 1 - order[::-1].index("response.delta")
    assert first_audio < last_delta
    assert order.index("state") < first_audio  # speaking is announced before the audio
    speaking = next(i for i in items if i.kind == "state" and i.event.state == "speaking")  # type: ignore[union-attr]
    assert order.index("audio.start") == items.index(speaking) + 1
    # Each sentence was spoken on its own, in order, and the audio is all of them.
    assert [text for text, _ in tts.ledger.calls] == [  # type: ignore[misc]
        "Paris is the capital.",
        "It sits on the Seine.",
        "About two million people live there.",
    ]
    audio = b"".join(i.audio for i in items if i.kind == "audio")
    assert audio == b"".join(tts.audio_for(t) for t, _ in tts.ledger.calls)  # type: ignore[misc]
    metrics: Any = items[-1].event
    assert metrics.voice_to_voice_ms < metrics.stt_ms + metrics.llm_ms


async def test_a_failure_while_speaking_stops_the_writer_too(connect: ClientFactory) -> None:
    err = ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, "tts down", stage=Stage.TTS)
    llm = FakeLanguageModel(LONG_REPLY, token_delay=0.03)
    pipeline = fake_pipeline(llm=llm, tts=FakeTextToSpeech(fail=err, fail_after_chunks=1))
    client = await connect(pipeline)
    await client.send(START)
    await client.speak()
    await client.send(STOP)
    items = await client.until("state", state="idle")
    assert kinds(items)[-2:] == ["error:provider-unavailable", "state:idle"]
    assert llm.ledger.open == 0
    assert await client.quiet(0.2) == []


async def test_barge_in_keeps_only_what_the_user_heard_in_the_history(
    connect: ClientFactory,
) -> None:
    llm = FakeLanguageModel(LONG_REPLY, token_delay=0.01)
    tts = FakeTextToSpeech(chunk_delay=0.05)
    client = await connect(fake_pipeline(llm=llm, tts=tts))
    await _reach(client, "speaking")
    first_sentence_ms = len("Paris is the capital.") * tts.ms_per_char
    # Wait until more than the first sentence was sent, then say only it was played.
    while client.session.turn.audio_sent <= 2 * 24 * first_sentence_ms:
        await client.until("audio")
    await client.send(InputAudioStart(type="input_audio.start", played_ms=first_sentence_ms))
    await client.until("state", state="recording")
    await client.speak()
    await client.send(STOP)
    await client.until("turn.metrics")
    history = llm.ledger.calls[-1]
    assert [(m.role, m.content) for m in history[1:3]] == [  # type: ignore[index]
        ("user", "What is the capital of France?"),
        ("assistant", "Paris is the capital."),
    ]


# ---------------------------------------------------------------- live transcription


async def test_each_turn_lets_the_providers_get_ready_while_the_user_talks(
    connect: ClientFactory,
) -> None:
    calls: list[str] = []

    class Preparing(FakeLanguageModel):
        def prepare(self) -> None:
            calls.append("prepare")

        async def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
            calls.append("reply")
            async for delta in super().reply(messages):
                yield delta

    client = await connect(fake_pipeline(llm=Preparing()))
    await full_turn(client)
    await full_turn(client)
    assert calls == ["prepare", "reply", "prepare", "reply"]


async def test_live_transcript_deltas_arrive_while_the_user_talks(connect: ClientFactory) -> None:
    stt = FakeLiveSpeechToText(ms_per_word=80, final_delay=0.01)
    client = await connect(fake_pipeline(stt=stt))
    await client.send(START)
    await client.speak(400)
    during = await client.until("transcript.delta")
    assert kinds(during) == ["state:recording", "transcript.delta"]
    await client.send(STOP)
    items = await client.until("turn.metrics")
    order = kinds(items)
    assert order.index("state:transcribing") < order.index("transcript.done")
    done = next(i.event for i in items if i.kind == "transcript.done")
    assert done.text == "What is the capital of France?"  # type: ignore[union-attr]
    deltas = "".join(i.event.text for i in during + items if i.kind == "transcript.delta")  # type: ignore[union-attr]
    assert deltas == "What is the capital of France?"
    live = stt.live[-1]
    assert bytes(live.received) == b"\x10\x00" * (24 * 400)  # every frame, in order
    assert live.closed
    assert stt.ledger.opened == 0  # the completed-recording path was not needed


@pytest.mark.parametrize("where", ["start", "finish"])
async def test_a_failing_live_transcription_falls_back_to_the_recording(
    connect: ClientFactory, where: str
) -> None:
    err = ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, "live down", stage=Stage.STT)
    stt = FakeLiveSpeechToText(**{f"fail_{where}": err})
    client = await connect(fake_pipeline(stt=stt))
    items = await full_turn(client)
    assert "error" not in kinds(items)
    done = next(i.event for i in items if i.kind == "transcript.done")
    assert done.text == "What is the capital of France?"  # type: ignore[union-attr]
    assert stt.ledger.opened == 1  # transcribed from the completed recording instead


async def test_the_live_transcription_is_closed_once_the_reply_is_heard(
    connect: ClientFactory,
) -> None:
    # Closing its connection is work for this server and the provider: not while the reply's
    # first requests are on their way, but right after the first audio.
    stt = FakeLiveSpeechToText()
    open_at_reply: list[bool] = []

    class Watching(FakeLanguageModel):
        async def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
            open_at_reply.append(not stt.live[-1].closed)
            async for delta in super().reply(messages):
                yield delta

    client = await connect(fake_pipeline(stt=stt, llm=Watching()))
    await client.send(START)
    await client.speak(400)
    await client.send(STOP)
    await client.until("audio.start")
    assert open_at_reply == [True]
    await client.until("turn.metrics")
    assert stt.live[-1].closed


async def test_a_turn_failing_after_its_transcript_closes_the_live_transcription(
    connect: ClientFactory,
) -> None:
    stt = FakeLiveSpeechToText()
    err = ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, "llm down", stage=Stage.LLM)
    client = await connect(fake_pipeline(stt=stt, llm=FakeLanguageModel(fail=err)))
    await client.send(START)
    await client.speak(400)
    await client.send(STOP)
    assert "transcript.done" in kinds(await client.until("error"))
    await client.until("state", state="idle")
    assert stt.live[-1].closed


async def test_cancel_while_recording_closes_the_live_transcription(
    connect: ClientFactory,
) -> None:
    stt = FakeLiveSpeechToText()
    client = await connect(fake_pipeline(stt=stt))
    await client.send(START)
    await client.speak(200)
    await client.until("transcript.delta")  # the live transcription is running
    await client.send(CANCEL)
    await client.until("state", state="idle")
    assert stt.live[-1].closed


async def test_a_reply_still_playing_when_the_user_talks_is_cut_in_the_history(
    connect: ClientFactory,
) -> None:
    llm = FakeLanguageModel(LONG_REPLY)
    tts = FakeTextToSpeech()
    client = await connect(fake_pipeline(llm=llm, tts=tts))
    await full_turn(client)  # all sent: the server is idle, the client still plays it
    first_sentence_ms = len("Paris is the capital.") * tts.ms_per_char
    await client.send(InputAudioStart(type="input_audio.start", played_ms=first_sentence_ms))
    await client.speak()
    await client.send(STOP)
    await client.until("turn.metrics")
    assert llm.ledger.calls[-1][2].content == "Paris is the capital."  # type: ignore[index]


async def test_a_barge_in_without_played_ms_assumes_real_time_playback(
    connect: ClientFactory,
) -> None:
    llm = FakeLanguageModel(LONG_REPLY)
    # The audio goes out much faster than it plays: 100 ms chunks every 20 ms.
    client = await connect(fake_pipeline(llm=llm, tts=FakeTextToSpeech(chunk_delay=0.02)))
    await _reach(client, "speaking")
    for _ in range(4):
        await client.until("audio")
    sent_ms = client.session.turn.audio_sent // 48
    await client.send(START)  # no played_ms: real-time playback from the first frame
    await client.until("state", state="recording")
    await client.speak()
    await client.send(STOP)
    await client.until("turn.metrics")
    history = llm.ledger.calls[-1]
    heard = [m.content for m in history if m.role == "assistant"]  # type: ignore[attr-defined]
    # Well under what was sent, and never more than the first sentence's worth of words.
    assert sent_ms >= 300
    assert heard == [] or len(heard[0]) < len("Paris is the capital.")


async def test_switching_hands_free_off_mid_recording_ends_that_turn(
    connect: ClientFactory,
) -> None:
    from voice_fsm.hands_free import HandsFree
    from voice_fsm.hands_free_mode import HandsFreeMode

    client = await connect()
    session = client.session

    async def failed(err: object) -> None:
        raise AssertionError(err)

    class Deaf:
        """A detector that hears nothing (the turn below is started by hand)."""

        def feed(self, pcm: bytes) -> list[Any]:
            return []

        async def aclose(self) -> None:
            pass

    control = session._turn_control()
    session.hands_free = HandsFreeMode(HandsFree(Deaf()), control, failed=failed)  # type: ignore[arg-type]
    await client.send(START)
    await client.until("state", state="recording")
    await client.send(
        SessionUpdate(type="session.update", session=SessionConfig(mode="push_to_talk"))
    )
    items = await client.until("session.updated")
    assert "state:idle" in kinds(items)
    assert session.hands_free is None
    assert kinds(await full_turn(client)) == NORMAL_TURN
