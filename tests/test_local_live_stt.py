"""Live transcription by incremental decoding: the logic with a fake decoder, then Whisper."""

from __future__ import annotations

import asyncio

import pytest

from voice_fsm.adapters.base import TranscriptDelta
from voice_fsm.adapters.local_live_stt import IncrementalTranscription, stable_prefix
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage

from support.local import require_engine

TEXT = "what is the capital of France"


class FakeDecoder:
    """Hears one more word of TEXT per 200 ms of audio; counts its decodes."""

    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.fail = fail

    def __call__(self, pcm: bytes) -> asyncio.Task[str]:
        self.calls.append(len(pcm))

        async def run() -> str:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise ProviderError(ErrorCode.PROVIDER_ERROR, "decoder broke", stage=Stage.STT)
            words = TEXT.split()[: len(pcm) // bytes_for_ms(200)]
            return " ".join(words)

        return asyncio.ensure_future(run())


def speech_always(pcm: bytes) -> list[float]:
    return [0.9] * (len(pcm) // bytes_for_ms(32))


def speech_never(pcm: bytes) -> list[float]:
    return [0.0] * (len(pcm) // bytes_for_ms(32))


async def feed(live: IncrementalTranscription, ms: int) -> None:
    for _ in range(ms // 100):
        await live.append(bytes(bytes_for_ms(100)))
        await asyncio.sleep(0.02)


async def collect(live: IncrementalTranscription) -> list[str]:
    return [delta.text async for delta in live.deltas()]


def test_stable_prefix_ignores_case_and_punctuation() -> None:
    assert stable_prefix("What is the", "what is the capital") == "what is the"
    assert stable_prefix("What is, the", "What is the capital?") == "What is the"
    assert stable_prefix("Where is", "What is") == ""
    assert stable_prefix("", "anything") == ""


async def test_agreed_words_go_out_while_the_audio_grows() -> None:
    decoder = FakeDecoder()
    live = IncrementalTranscription(decoder, speech_always, step_ms=300)
    deltas = asyncio.create_task(collect(live))
    await feed(live, 1300)
    assert len(decoder.calls) >= 3  # decoded again and again while "recording"
    said_before_finish = live._said
    assert said_before_finish.startswith("what is")
    text = await live.finish()
    assert text == TEXT
    assert "".join(await deltas) == TEXT  # deltas then add up to the final transcript


async def test_a_decode_covering_all_speech_is_the_final_transcript() -> None:
    decoder = FakeDecoder()
    live = IncrementalTranscription(decoder, speech_never, step_ms=300)
    await feed(live, 1200)
    await asyncio.sleep(0.05)  # the last decode is done
    decodes = len(decoder.calls)
    await live.append(bytes(bytes_for_ms(150)))  # silence after it, less than a step
    assert await live.finish() == TEXT
    assert len(decoder.calls) == decodes  # no final decode was needed


async def test_speech_after_the_last_decode_is_decoded_at_the_end() -> None:
    decoder = FakeDecoder()
    live = IncrementalTranscription(decoder, speech_always, step_ms=1000)
    await feed(live, 1000)
    await asyncio.sleep(0.05)
    await live.append(bytes(bytes_for_ms(200)))
    decodes = len(decoder.calls)
    await live.finish()
    assert len(decoder.calls) == decodes + 1
    assert decoder.calls[-1] == bytes_for_ms(1200)  # the whole recording


async def test_a_failing_decode_is_a_provider_error_and_close_is_safe() -> None:
    live = IncrementalTranscription(FakeDecoder(fail=True), speech_always, step_ms=300)
    await feed(live, 400)
    with pytest.raises(ProviderError):
        await live.finish()
    await live.aclose()
    await live.aclose()


async def test_whisper_transcribes_live_and_skips_the_final_decode_after_silence() -> None:
    require_engine("faster_whisper")
    require_engine("piper")
    from voice_fsm.adapters.local_stt import WhisperSpeechToText
    from voice_fsm.settings import LocalSettings
    from voice_fsm.testing.speech import silence, spoken

    stt = WhisperSpeechToText(LocalSettings())
    live = await stt.start_live()
    assert isinstance(live, IncrementalTranscription)
    decodes: list[int] = []
    original = live._decode
    live._decode = lambda pcm: (decodes.append(len(pcm)), original(pcm))[1]  # type: ignore[method-assign]

    # The pause must outlast the decodes still due when the speech ends: on a slow CPU a
    # decode of these 2 s of audio takes about 1 s, and the one that covers the end of the
    # speech may have to wait for the one before it.
    pcm = spoken("What is the capital of France?", lead_s=0.2) + silence(3.0)
    deltas: list[TranscriptDelta] = []

    async def read() -> None:
        async for delta in live.deltas():
            deltas.append(delta)

    reader = asyncio.create_task(read())
    frame = bytes_for_ms(40)
    for offset in range(0, len(pcm), frame):  # at the pace of speech
        await live.append(pcm[offset : offset + frame])
        await asyncio.sleep(0.04)
    decodes_before_stop = len(decodes)
    text = await live.finish()
    await reader
    assert "capital" in text.lower()
    assert "france" in text.lower()
    assert decodes_before_stop >= 2
    assert deltas  # some words went out before the end
    assert len(decodes) == decodes_before_stop  # the silent tail needed no final decode
    await live.aclose()
    await stt.aclose()


async def test_a_pause_in_the_speech_starts_a_decode_at_once() -> None:
    decoder = FakeDecoder()
    fed = 0

    def speech_then_silence(pcm: bytes) -> list[float]:
        nonlocal fed
        frames = len(pcm) // bytes_for_ms(32)
        out = [0.9 if (fed + i) * 32 < 600 else 0.0 for i in range(frames)]
        fed += frames
        return out

    live = IncrementalTranscription(decoder, speech_then_silence, step_ms=10_000)
    await feed(live, 700)
    assert decoder.calls == []  # still talking, and far from a step
    await feed(live, 200)  # more than PAUSE_MS of silence after the speech
    assert len(decoder.calls) == 1
    await asyncio.sleep(0.05)
    await live.finish()
    assert len(decoder.calls) == 1  # that decode covered all the speech
