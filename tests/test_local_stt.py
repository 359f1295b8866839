"""WhisperSpeechToText with the real models (Whisper base by default, tiny.en as an option), on
speech synthesized by Piper."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from voice_fsm.adapters.base import SpeechToText, TranscriptDelta, TranscriptDone, TranscriptEvent
from voice_fsm.adapters.local.packages import LocalModelMissing
from voice_fsm.adapters.local.runtime import InferenceLane
from voice_fsm.audio import SAMPLE_RATE, pcm16_to_float, resample
from voice_fsm.errors import ProviderError, Stage
from voice_fsm.settings import LocalSettings

from support.local import require_engine

require_engine("faster_whisper")
require_engine("piper")

from voice_fsm.adapters.local.stt import WhisperSpeechToText, model_label  # noqa: E402
from voice_fsm.testing.speech import silence, spoken  # noqa: E402

QUESTION = "What is the capital of France?"

# One loop for the module's async tests: the model and its lane are loaded once and shared, as in
# the app.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def say() -> Callable[[str], bytes]:
    """Speak a text with Piper as PCM16 24 kHz, cached for the module."""
    try:
        spoken("Hello.")  # loads the voice
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))
    return functools.cache(functools.partial(spoken, lead_s=0.1))


@pytest.fixture(scope="module")
def stt() -> WhisperSpeechToText:
    try:
        return WhisperSpeechToText(LocalSettings())
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))


async def collect(stt: SpeechToText, pcm: bytes) -> list[TranscriptEvent]:
    return [event async for event in stt.transcribe(pcm)]


@module_loop
async def test_transcribes_a_question(
    stt: WhisperSpeechToText, say: Callable[[str], bytes]
) -> None:
    events = await collect(stt, say(QUESTION))

    assert isinstance(stt, SpeechToText)
    assert (stt.provider, stt.model) == ("local", "whisper-base")
    assert isinstance(events[-1], TranscriptDone)
    assert all(isinstance(event, TranscriptDelta) for event in events[:-1])
    assert len(events) >= 2
    text = events[-1].text
    assert text == "What is the capital of France?"
    assert text == "".join(e.text for e in events[:-1]).strip()


class EncoderSpy:
    """The CTranslate2 model, recording the number of frames each encode is given."""

    def __init__(self, model: object, fail: str | None = None) -> None:
        self._model = model
        self.frames: list[int] = []
        self.fail = fail

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def encode(self, features: Any, **options: object) -> object:
        self.frames.append(features.shape[-1])
        return self._model.encode(features, **options)  # type: ignore[attr-defined]

    def generate(self, *args: object, **options: object) -> object:
        if self.fail == "decoding":
            raise RuntimeError("decoder exploded")
        return self._model.generate(*args, **options)  # type: ignore[attr-defined]


@module_loop
async def test_a_turn_is_decoded_on_a_window_cut_to_its_length_and_said_once(
    stt: WhisperSpeechToText, say: Callable[[str], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = EncoderSpy(stt._whisper.model)  # type: ignore[union-attr]
    monkeypatch.setattr(stt._whisper, "model", spy)
    pcm = say("How many days are in a leap year?") + silence(1.0)

    events = await collect(stt, pcm)

    text = events[-1].text  # type: ignore[union-attr]
    assert text.startswith("How many days are in a leap")
    assert text.lower().count("how many") == 1  # not started over in the padding
    # The turn at 16 kHz plus 1.5 s of silence, a frame each 10 ms, an even number of them.
    samples = len(resample(pcm16_to_float(pcm), SAMPLE_RATE, 16_000)) + 24_000
    assert spy.frames == [samples // 160 // 2 * 2]  # not Whisper's 3000


@module_loop
async def test_a_turn_longer_than_a_window_takes_the_thirty_second_path(
    stt: WhisperSpeechToText, say: Callable[[str], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = EncoderSpy(stt._whisper.model)  # type: ignore[union-attr]
    monkeypatch.setattr(stt._whisper, "model", spy)

    events = await collect(stt, say(QUESTION) + silence(29.0))

    assert "capital of france" in events[-1].text.lower()  # type: ignore[union-attr]
    assert spy.frames
    assert set(spy.frames) == {3000}


@pytest.fixture(scope="module")
def tiny() -> WhisperSpeechToText:
    return WhisperSpeechToText(LocalSettings(stt_model="tiny.en"))


@module_loop
async def test_tiny_is_an_option_decoded_on_thirty_second_windows(
    tiny: WhisperSpeechToText, say: Callable[[str], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = EncoderSpy(tiny._whisper.model)  # type: ignore[union-attr]
    monkeypatch.setattr(tiny._whisper, "model", spy)

    events = await collect(tiny, say(QUESTION))

    assert tiny.model == "whisper-tiny.en"
    assert "capital of france" in events[-1].text.lower()  # type: ignore[union-attr]
    assert set(spy.frames) == {3000}  # on short windows tiny starts the utterance over


@module_loop
@pytest.mark.parametrize("seconds", [0.0, 0.01, 0.3])
async def test_silence_gives_an_empty_transcript(stt: WhisperSpeechToText, seconds: float) -> None:
    events = await collect(stt, silence(seconds))

    assert events == [TranscriptDone("")]


@module_loop
async def test_cancelled_transcription_frees_the_lane(
    stt: WhisperSpeechToText, say: Callable[[str], bytes]
) -> None:
    started = asyncio.Event()
    pcm = say(QUESTION)

    async def consume() -> None:
        stream = stt.transcribe(pcm)
        started.set()
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    await asyncio.sleep(0.05)  # the worker is computing features or decoding by now
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with asyncio.timeout(30):
        events = await collect(stt, pcm)
    assert "capital" in events[-1].text.lower()


@module_loop
async def test_closing_the_stream_stops_the_worker_between_segments(
    stt: WhisperSpeechToText, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []

    def endless() -> Iterator[SimpleNamespace]:
        for index in itertools.count():
            time.sleep(0.005)  # decoding a window
            decoded.append(index)
            yield SimpleNamespace(text=f" word{index}")

    monkeypatch.setattr(stt._whisper, "transcribe", lambda audio, **_: (endless(), None))
    stream = stt.transcribe(silence(29.0))  # longer than a short window: 30 s segments

    assert await anext(stream) == TranscriptDelta("word0")
    await stream.aclose()
    stopped_at = len(decoded)
    await asyncio.sleep(0.05)

    assert len(decoded) == stopped_at  # the worker has returned, not just the consumer
    assert stopped_at < 10


@module_loop
@pytest.mark.parametrize("concurrency", [1, 2])
async def test_concurrent_transcriptions_both_finish(
    concurrency: int, say: Callable[[str], bytes]
) -> None:
    stt = WhisperSpeechToText(LocalSettings(), InferenceLane("stt", concurrency))
    other = "The weather is nice today."

    first, second = await asyncio.gather(collect(stt, say(QUESTION)), collect(stt, say(other)))

    assert isinstance(first[-1], TranscriptDone)
    assert isinstance(second[-1], TranscriptDone)
    assert "france" in first[-1].text.lower()
    assert "weather" in second[-1].text.lower()


@module_loop
async def test_event_loop_stays_responsive(
    stt: WhisperSpeechToText, say: Callable[[str], bytes]
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    pcm = say(QUESTION + " The weather is nice today.")
    task = asyncio.create_task(ticker())
    try:
        await collect(stt, pcm)
    finally:
        task.cancel()
    # The transcription takes a few hundred ms; a blocked loop would tick at most once or twice.
    assert ticks >= 5


@module_loop
@pytest.mark.parametrize("when", ["features", "decoding"])
@pytest.mark.parametrize("seconds", [2.0, 29.0])
async def test_engine_failure_becomes_a_provider_error(
    stt: WhisperSpeechToText, monkeypatch: pytest.MonkeyPatch, when: str, seconds: float
) -> None:
    def segments() -> Iterator[object]:
        raise RuntimeError("decoder exploded")
        yield  # a generator, like faster-whisper's

    def failing(audio: object, **options: object) -> tuple[Iterator[object], None]:
        if when == "features":
            raise RuntimeError("bad audio")
        return segments(), None

    def bad_features(audio: object, **options: object) -> object:
        raise RuntimeError("bad audio")

    monkeypatch.setattr(stt._whisper, "transcribe", failing)  # 30 s windows
    if when == "features":  # a short window
        monkeypatch.setattr(stt._whisper, "feature_extractor", bad_features)
    else:
        monkeypatch.setattr(stt._whisper, "model", EncoderSpy(stt._whisper.model, "decoding"))  # type: ignore[union-attr]

    with pytest.raises(ProviderError) as caught:
        await collect(stt, silence(seconds))

    assert caught.value.stage is Stage.STT
    assert isinstance(caught.value.__cause__, RuntimeError)


@module_loop
async def test_closed_model_raises_a_provider_error(stt: WhisperSpeechToText) -> None:
    closed = WhisperSpeechToText(LocalSettings())
    await closed.aclose()

    with pytest.raises(ProviderError):
        await collect(closed, bytes(4800))


def test_warm_up_and_transcribe_sync(stt: WhisperSpeechToText, say: Callable[[str], bytes]) -> None:
    stt.warm_up()
    samples = resample(pcm16_to_float(say(QUESTION)), SAMPLE_RATE, 16_000)

    text = stt.transcribe_sync(samples)

    assert "capital" in text.lower()


def test_model_label() -> None:
    assert model_label("base") == "whisper-base"
    assert model_label("tiny.en") == "whisper-tiny.en"
    assert model_label("whisper-tiny.en") == "whisper-tiny.en"
    assert model_label("/models/my-whisper") == "/models/my-whisper"
