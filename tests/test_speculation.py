"""Preemptive generation: the reply starts on the live transcript when the user pauses (or
releases the button), its output held until the end of the turn is confirmed.

A scripted detector (the embedded detector's events at set places of the stream: test_vad.py
shows Silero gives them for real speech) and a scripted live transcription (words at set places
of the turn's audio), fake language model and speech; the microphone streams in real time, so
the reply started on a pause has time to be written and spoken before the user goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from test_tool_turns import Answer, ScriptedModel
from voice_fsm.adapters.base import ChatMessage, LiveTranscription, ToolSpec, TranscriptDelta
from voice_fsm.adapters.fake import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    ScriptedReply,
)
from voice_fsm.audio import bytes_for_ms, duration_ms
from voice_fsm.errors import VoiceError
from voice_fsm.events import (
    ClientTool,
    InputAudioStart,
    InputAudioStop,
    SessionConfig,
    SessionUpdate,
    ToolResultCommand,
)
from voice_fsm.metrics import Metrics
from voice_fsm.providers import Pipeline
from voice_fsm.speculation import same_in_substance
from voice_fsm.turn_record import TurnRecord
from voice_fsm.vad_events import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, VadEvent

from conftest import ClientFactory
from session_harness import Client, kinds, make_settings

HANDS_FREE = SessionUpdate(type="session.update", session=SessionConfig(mode="hands_free"))
SENTENCE = "What is the capital of France?"
FRAME_MS = 20


class ScriptedDetector:
    """A `TurnDetector` that reports `script`'s events once the stream reaches their time."""

    def __init__(self, script: Sequence[tuple[int, VadEvent]]) -> None:
        self._script = list(script)
        self._fed = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        self._fed += len(pcm)
        due = [event for at, event in self._script if at <= duration_ms(self._fed)]
        self._script = self._script[len(due) :]
        return due

    async def events(self) -> AsyncIterator[VadEvent]:
        return
        yield

    def transcription(self, item: str) -> LiveTranscription:
        raise LookupError(item)

    @property
    def error(self) -> VoiceError | None:
        return None

    async def aclose(self) -> None:
        pass


class ScriptedLive(FakeSpeechToText):
    """Live transcription whose words come at set places of the turn's audio; `final` after
    the stop (what the completed recording says). `covers`: what it says when asked whether
    its transcript covers the recording (None: it cannot tell)."""

    def __init__(
        self, words: Sequence[tuple[int, str]], final: str = SENTENCE, covers: bool | None = None
    ) -> None:
        super().__init__(final)
        self.words = words
        self.covers = covers

    async def start_live(self, *, language: str | None = None) -> LiveTranscription:
        if self.covers is None:
            return _Live(self.words, self.transcript)
        return _Knowing(self.words, self.transcript, self.covers)


class _Live:
    def __init__(self, words: Sequence[tuple[int, str]], final: str) -> None:
        self._words = list(words)
        self._final = final
        self._received = 0
        self._deltas: asyncio.Queue[TranscriptDelta | None] = asyncio.Queue()

    async def append(self, pcm: bytes) -> None:
        self._received += len(pcm)
        while self._words and self._words[0][0] <= duration_ms(self._received):
            self._deltas.put_nowait(TranscriptDelta(self._words.pop(0)[1]))

    async def deltas(self) -> AsyncIterator[TranscriptDelta]:
        while (delta := await self._deltas.get()) is not None:
            yield delta

    async def finish(self) -> str:
        await asyncio.sleep(0.05)
        self._deltas.put_nowait(None)
        return self._final

    async def aclose(self) -> None:
        self._deltas.put_nowait(None)


class _Knowing(_Live):
    def __init__(self, words: Sequence[tuple[int, str]], final: str, covers: bool) -> None:
        super().__init__(words, final)
        self._covers = covers

    def covers_recording(self) -> bool:
        return self._covers


def answering() -> FakeLanguageModel:
    """A model that answers what it was asked: its reply quotes the user's message."""

    def script(messages: Sequence[ChatMessage], _tools: Sequence[ToolSpec]) -> ScriptedReply:
        return ScriptedReply(f"You asked: {messages[-1].content} Here is the answer.")

    return FakeLanguageModel(first_token_delay=0.01, token_delay=0.002, script=script)


class Records:
    def __init__(self) -> None:
        self.records: list[TurnRecord] = []

    def turn_ended(self, record: TurnRecord) -> None:
        self.records.append(record)


def pipeline(stt: FakeSpeechToText, llm: FakeLanguageModel, detector: Any = None) -> Pipeline:
    made = Pipeline(
        stt=stt, llm=llm, tts=FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002)
    )
    if detector is not None:
        made.vad = lambda: detector
    return made


async def stream(client: Client, ms: int) -> None:
    """`ms` of microphone audio, in real time."""
    frame = b"\x10\x00" * (bytes_for_ms(FRAME_MS) // 2)
    for _ in range(ms // FRAME_MS):
        await client.send(frame)
        await asyncio.sleep(FRAME_MS / 1000)


def asked(llm: FakeLanguageModel) -> list[str]:
    """The user message of each language model request."""
    return [str(call[-1].content) for call in llm.ledger.calls]  # type: ignore[index, union-attr]


def first(items: list[Any], *names: str) -> int:
    return min(i for i, item in enumerate(items) if item.kind in names)


REPLY_OUTPUT = ("audio", "audio.start", "response.delta")


async def test_a_pause_mid_sentence_sends_nothing_and_the_reply_answers_the_whole_sentence(
    connect: ClientFactory,
) -> None:
    # The user says "What is the capital", pauses 300 ms (under the 500 ms silence window),
    # then "of France?". The pause starts a reply on "What is the capital"; speech again
    # cancels it, and nothing of it ever reaches the client.
    detector = ScriptedDetector(
        [
            (100, SpeechStarted(0)),
            (732, SpeechPaused(700)),
            (1032, SpeechResumed(1000)),
            (1532, SpeechPaused(1500)),
            (2032, SpeechStopped(1530)),
        ]
    )
    stt = ScriptedLive([(300, "What is"), (600, " the capital"), (1400, " of France?")])
    llm = answering()
    records = Records()
    client = await connect(pipeline(stt, llm, detector), observers=[records])
    await client.send(HANDS_FREE)
    await client.until("session.updated")

    await stream(client, 2300)
    items = await client.until("turn.metrics")

    stopped = first(items, "vad.speech_stopped")
    assert first(items, *REPLY_OUTPUT) > stopped  # nothing of a reply before the turn's end
    # The reply started on the pause was cancelled; the one sent answers the whole sentence.
    assert asked(llm)[0] == "What is the capital"
    assert asked(llm)[-1] == SENTENCE
    done: Any = next(i.event for i in items if i.kind == "response.done")
    assert done.text == f"You asked: {SENTENCE} Here is the answer."
    sent = "".join(i.event.text for i in items if i.kind == "response.delta")  # type: ignore[union-attr]
    assert sent == done.text
    assert "error" not in kinds(items)

    (record,) = records.records
    fields = record.log_fields()
    assert fields["speculative_replies"] == len(asked(llm))
    assert fields["wasted_replies"] == 1  # the reply to "What is the capital"
    assert fields["wasted_llm_chars"] > 0
    assert fields["wasted_speech_ms"] > 0  # its first words were already spoken, then dropped
    metrics = Metrics()
    metrics.turn_ended(record)
    text = metrics.exposition().decode()
    assert 'voice_fsm_speculative_replies_total{fate="wasted",mode="hands_free"} 1.0' in text
    assert 'voice_fsm_speculative_replies_total{fate="adopted",mode="hands_free"} 1.0' in text


async def test_a_confirmed_reply_is_adopted_and_heard_after_the_turn_ends(
    connect: ClientFactory,
) -> None:
    # The live transcript differs from the final one only in case and punctuation: the reply
    # started on the pause is the turn's reply, asked once.
    detector = ScriptedDetector(
        [(100, SpeechStarted(0)), (1232, SpeechPaused(1200)), (1732, SpeechStopped(1230))]
    )
    stt = ScriptedLive([(400, "what is the"), (1000, " capital of france")])
    llm = answering()
    records = Records()
    client = await connect(pipeline(stt, llm, detector), observers=[records])
    await client.send(HANDS_FREE)
    await client.until("session.updated")

    await stream(client, 2000)
    items = await client.until("turn.metrics")

    assert asked(llm) == ["what is the capital of france"]  # once, with the live transcript
    assert first(items, *REPLY_OUTPUT) > first(items, "vad.speech_stopped")
    assert first(items, *REPLY_OUTPUT) > first(items, "transcript.done")
    # From the final transcript on, the client sees the turn it would see without it.
    assert kinds(items[first(items, "transcript.done") :]) == [
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
    (record,) = records.records
    assert record.outcome == "ok"
    assert (record.speculation["speculative_replies"], record.speculation["wasted_replies"]) == (
        1,
        0,
    )
    # The history holds the final transcript, which the next turn's request sees.
    assert client.session.conversation.messages()[0].content == SENTENCE


async def test_a_last_syllable_after_the_pause_does_not_cancel_the_reply(
    connect: ClientFactory,
) -> None:
    # 100 ms of speech after the first pause (a sentence's tail coming back above the
    # threshold): not the user going on, and the transcript is the same.
    detector = ScriptedDetector(
        [
            (100, SpeechStarted(0)),
            (1232, SpeechPaused(1200)),
            (1332, SpeechResumed(1300)),
            (1432, SpeechPaused(1400)),
            (1932, SpeechStopped(1430)),
        ]
    )
    stt = ScriptedLive([(400, "What is the"), (1000, " capital of France?")])
    llm = answering()
    records = Records()
    client = await connect(pipeline(stt, llm, detector), observers=[records])
    await client.send(HANDS_FREE)
    await client.until("session.updated")

    await stream(client, 2200)
    await client.until("turn.metrics")

    assert asked(llm) == [SENTENCE]
    assert records.records[0].speculation["wasted_replies"] == 0


async def test_a_final_transcript_that_says_otherwise_starts_the_reply_again(
    connect: ClientFactory,
) -> None:
    detector = ScriptedDetector(
        [(100, SpeechStarted(0)), (1232, SpeechPaused(1200)), (1732, SpeechStopped(1230))]
    )
    stt = ScriptedLive([(400, "What is the"), (1000, " capital of Spain?")])  # misheard
    llm = answering()
    records = Records()
    client = await connect(pipeline(stt, llm, detector), observers=[records])
    await client.send(HANDS_FREE)
    await client.until("session.updated")

    await stream(client, 2000)
    items = await client.until("turn.metrics")

    assert asked(llm) == ["What is the capital of Spain?", SENTENCE]
    done: Any = next(i.event for i in items if i.kind == "response.done")
    assert done.text == f"You asked: {SENTENCE} Here is the answer."
    assert "Spain" not in "".join(
        i.event.text  # type: ignore[union-attr]
        for i in items
        if i.kind == "response.delta"
    )
    (record,) = records.records
    assert record.speculation["wasted_replies"] == 1


async def test_push_to_talk_starts_the_reply_on_release_when_the_live_transcript_is_complete(
    connect: ClientFactory,
) -> None:
    # The words were all heard 600 ms before the release: the transcript covers the recording.
    stt = ScriptedLive([(300, "What is the"), (700, " capital of France?")])
    llm = answering()
    records = Records()
    client = await connect(pipeline(stt, llm), observers=[records])
    await client.send(InputAudioStart(type="input_audio.start"))
    await stream(client, 1300)
    await client.send(InputAudioStop(type="input_audio.stop"))
    items = await client.until("turn.metrics")

    assert asked(llm) == ["What is the capital of France?"]
    assert first(items, *REPLY_OUTPUT) > first(items, "transcript.done")
    (record,) = records.records
    assert record.log_fields()["speculative_replies"] == 1
    assert record.log_fields()["wasted_replies"] == 0


@pytest.mark.parametrize(
    ("covers", "llm_provider"),
    [(False, "fake"), (None, "local")],
    ids=["the-transcription-says-it-lags", "embedded-llm-and-no-word-on-coverage"],
)
async def test_no_reply_starts_on_a_transcript_that_may_lag(
    connect: ClientFactory, covers: bool | None, llm_provider: str
) -> None:
    # The transcript has not changed for 600 ms, but the transcription says it has not caught
    # up; or it cannot tell, and a wrong guess would hold the embedded language model.
    stt = ScriptedLive([(300, "What is the")], covers=covers)
    llm = answering()
    llm.provider = llm_provider
    client = await connect(pipeline(stt, llm))
    await client.send(InputAudioStart(type="input_audio.start"))
    await stream(client, 900)
    await client.send(InputAudioStop(type="input_audio.stop"))
    await client.until("turn.metrics")

    assert asked(llm) == [SENTENCE]


async def test_the_setting_turns_it_off(connect: ClientFactory) -> None:
    detector = ScriptedDetector(
        [(100, SpeechStarted(0)), (1232, SpeechPaused(1200)), (1732, SpeechStopped(1230))]
    )
    stt = ScriptedLive([(400, "what is the"), (1000, " capital of france")])
    llm = answering()
    settings = make_settings()
    settings.vad.preemptive_reply = False
    records = Records()
    client = await connect(pipeline(stt, llm, detector), settings, observers=[records])
    await client.send(HANDS_FREE)
    await client.until("session.updated")

    await stream(client, 2000)
    await client.until("turn.metrics")

    assert asked(llm) == [SENTENCE]  # the final transcript's, after the end of the turn
    assert records.records[0].log_fields()["speculative_replies"] == 0


def test_same_in_substance_sets_case_punctuation_and_spacing_aside() -> None:
    assert same_in_substance("what is the capital of france", "What is the capital of France?")
    assert same_in_substance("It's  10 o'clock.", "it's 10 o'clock")
    assert not same_in_substance("What is the capital", "What is the capital of France?")
    assert not same_in_substance("What is the capital of Spain?", SENTENCE)
    assert not same_in_substance("", "")


async def test_a_tool_the_reply_calls_runs_only_once_the_turn_is_confirmed(
    connect: ClientFactory,
) -> None:
    # The model answers the live transcript with a call of the client's tool at once: the call
    # waits, held with the rest, and reaches the client after the final transcript.
    model = ScriptedModel(
        Answer("", [("open_door", '{"room": "kitchen"}')]), Answer("The kitchen door is open.")
    )
    stt = ScriptedLive([(300, "Open the"), (700, " kitchen door.")], final="Open the kitchen door.")
    records = Records()
    client = await connect(pipeline(stt, model), observers=[records])  # type: ignore[arg-type]
    door = ClientTool(
        name="open_door",
        description="Open a door.",
        parameters={"type": "object", "properties": {"room": {"type": "string"}}},
    )
    await client.send(SessionUpdate(type="session.update", session=SessionConfig(tools=[door])))
    await client.until("session.updated")
    await client.send(InputAudioStart(type="input_audio.start"))
    await stream(client, 1300)
    await client.send(InputAudioStop(type="input_audio.stop"))
    seen = await client.until("tool.call")
    assert first(seen, "tool.call") > first(seen, "transcript.done")
    assert len(model.requests) == 1  # the reply started on the live transcript, adopted
    call: Any = seen[-1].event
    await client.send(ToolResultCommand(type="tool.result", call_id=call.call_id, output="ok"))
    items = seen + await client.until("turn.metrics")

    assert "state:acting" in kinds(items)
    done: Any = next(i.event for i in items if i.kind == "response.done")
    assert done.text == "The kitchen door is open."
    assert records.records[0].log_fields()["wasted_replies"] == 0
