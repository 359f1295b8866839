"""Live transcription by incremental decoding: the logic with a fake decoder, then Whisper."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from voice_fsm.adapters.base import TranscriptDelta
from voice_fsm.adapters.local.live_stt import IDLE_RATIO, IncrementalTranscription, stable_prefix
from voice_fsm.adapters.local.runtime import BACKGROUND, URGENT, InferenceLane, StopFlag
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage

from support.local import require_engine

TEXT = "what is the capital of France"


class FakeDecoder:
    """Hears one more word of TEXT per 200 ms of audio; counts its decodes."""

    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.background: list[bool] = []
        self.delay = delay
        self.fail = fail

    def __call__(self, pcm: bytes, *, background: bool = False) -> asyncio.Task[str]:
        self.calls.append(len(pcm))
        self.background.append(background)

        async def run() -> str:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise ProviderError(ErrorCode.PROVIDER_ERROR, "decoder broke", stage=Stage.STT)
            words = TEXT.split()[: len(pcm) // bytes_for_ms(200)]
            return " ".join(words)

        return asyncio.ensure_future(run())


def speech_always(pcm: bytes) -> list[float]:
    return [0.9] * (len(pcm) // bytes_for_ms(32))


class Speech:
    """Speech throughout, one probability per whole 32 ms frame fed (the remainder carried
    over, as the streaming detector does: speech_always drifts 4 ms a 100 ms chunk)."""

    def __init__(self) -> None:
        self._fed = 0

    def __call__(self, pcm: bytes) -> list[float]:
        before = self._fed // bytes_for_ms(32)
        self._fed += len(pcm)
        return [0.9] * (self._fed // bytes_for_ms(32) - before)


def speech_then_silence(speech_ms: int) -> Callable[[bytes], list[float]]:
    """A detector that hears speech for the first `speech_ms` of the frames fed, then none."""
    fed = 0

    def probabilities(pcm: bytes) -> list[float]:
        nonlocal fed
        frames = len(pcm) // bytes_for_ms(32)
        out = [0.9 if (fed + i) * 32 < speech_ms else 0.0 for i in range(frames)]
        fed += frames
        return out

    return probabilities


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
    from voice_fsm.adapters.local.stt import WhisperSpeechToText
    from voice_fsm.settings import LocalSettings
    from voice_fsm.testing.speech import silence, spoken

    stt = WhisperSpeechToText(LocalSettings())
    live = await stt.start_live()
    assert isinstance(live, IncrementalTranscription)
    decodes: list[int] = []
    original = live._decode

    def counted(pcm: bytes, *, background: bool) -> asyncio.Task[str]:
        decodes.append(len(pcm))
        return original(pcm, background=background)

    live._decode = counted

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
    # At least the pause's decode; step decodes before it are best-effort (a slow or busy
    # machine may leave no idle time for one in 2 s of speech).
    assert decodes_before_stop >= 1
    assert deltas
    assert len(decodes) == decodes_before_stop  # the silent tail needed no final decode
    await live.aclose()
    await stt.aclose()


async def test_a_pause_in_the_speech_starts_a_decode_at_once() -> None:
    decoder = FakeDecoder()
    speech = speech_then_silence(600)
    live = IncrementalTranscription(decoder, speech, step_ms=10_000)
    await feed(live, 700)
    assert decoder.calls == []  # still talking, and far from a step
    await feed(live, 200)  # more than PAUSE_MS of silence after the speech
    assert len(decoder.calls) == 1
    await asyncio.sleep(0.05)
    await live.finish()
    assert len(decoder.calls) == 1  # that decode covered all the speech


async def test_a_decode_that_ended_just_after_the_speech_did_not_hear_its_end() -> None:
    # The detector's probability falls before a word's quiet end: in a browser's hands-free
    # turn, a decode that stopped a few frames after the last speech frame heard 'France' as
    # 'friends'. Only a decode reaching PAUSE_MS past the speech counts as having heard it all.
    decoder = FakeDecoder()
    live = IncrementalTranscription(decoder, speech_then_silence(600), step_ms=600)
    await feed(live, 600)  # speech to 576 ms so far: a step
    await asyncio.sleep(0.05)
    assert decoder.calls == [bytes_for_ms(600)]
    await feed(live, 100)  # the last speech frame ends at 608 ms, then 92 ms of silence
    assert decoder.calls == [bytes_for_ms(600)]  # no pause yet, and no step in a silence
    await feed(live, 100)  # the pause: decoded again, since the step ended before the speech
    assert decoder.calls[1:] == [bytes_for_ms(800)]
    assert decoder.background == [True, False]
    await asyncio.sleep(0.05)
    await live.finish()
    assert len(decoder.calls) == 2  # the pause's decode heard it all: no final decode


async def test_no_step_decode_starts_in_a_silence_that_may_be_the_pause() -> None:
    """A step decode there would hold the decoder when the pause's decode is asked for."""
    decoder = FakeDecoder(delay=0.0)
    live = IncrementalTranscription(decoder, speech_then_silence(500), step_ms=200)
    await feed(live, 500)  # steps at 200 and 400 ms, while the speech goes on
    assert decoder.calls == [bytes_for_ms(200), bytes_for_ms(400)]
    await feed(live, 100)  # a step is due, but the speech ended at 512 ms: 88 ms of silence
    assert len(decoder.calls) == 2
    await feed(live, 100)  # the pause: its decode, at once
    assert decoder.calls[2:] == [bytes_for_ms(700)]
    assert decoder.background == [True, True, False]
    await asyncio.sleep(0.01)
    assert await live.finish() == "what is the"
    assert len(decoder.calls) == 3


class LaneDecoder:
    """Decodes as FakeDecoder does, but in a worker thread of a real lane (shared if given),
    taking `seconds` a decode; notes when each decode ran and at which priority."""

    def __init__(self, seconds: float, lane: InferenceLane | None = None) -> None:
        self.lane = lane or InferenceLane("stt")
        self.seconds = seconds
        self.runs: list[tuple[float, float, bool]] = []  # start, end, background

    def __call__(self, pcm: bytes, *, background: bool) -> asyncio.Task[str]:
        def run(_stop: StopFlag) -> str:
            start = time.monotonic()
            threading.Event().wait(self.seconds)
            self.runs.append((start, time.monotonic(), background))
            return " ".join(TEXT.split()[: len(pcm) // bytes_for_ms(200)])

        priority = BACKGROUND if background else URGENT
        return asyncio.ensure_future(self.lane.run(run, priority=priority))


async def test_step_decodes_leave_the_lane_idle_as_long_as_the_last_decode_took() -> None:
    """A decode slower than a step (a slow CPU): the next step decode waits until the lane
    has been idle IDLE_RATIO times that long, instead of following the last one at once."""
    decoder = LaneDecoder(0.15)
    live = IncrementalTranscription(decoder, Speech(), idle_for=decoder.lane.idle_for, step_ms=100)
    deltas = asyncio.create_task(collect(live))
    await feed(live, 10_000)  # at 5x the pace of speech: 100 ms of audio every 20 ms
    assert await live.finish() == TEXT
    steps = [run for run in decoder.runs if run[2]]
    assert len(steps) >= 2  # still transcribed live
    for (_, end, _), (start, _, background) in zip(decoder.runs, decoder.runs[1:], strict=False):
        if background:
            # Each decode took 0.15 s at least: the lane stayed idle 3 times that long.
            assert start - end >= IDLE_RATIO * 0.15 - 0.01
    assert decoder.runs[-1][2] is False  # the final decode, at once
    assert "".join(await deltas) == TEXT


async def test_no_step_decode_while_other_sessions_use_the_lane_but_the_pause_goes_first() -> None:
    lane = InferenceLane("stt")
    others = Gate()
    busy = asyncio.create_task(lane.run(others.run))  # another session's decode, running
    # Another session's step decode, waiting: it started when the lane was idle (two
    # sessions can in the same moment).
    queued_step = asyncio.create_task(lane.run(lambda _stop: time.monotonic(), priority=BACKGROUND))
    decoder = LaneDecoder(0.01, lane)
    speech = speech_then_silence(1200)
    live = IncrementalTranscription(decoder, speech, idle_for=lane.idle_for, step_ms=300)
    await feed(live, 1100)
    assert decoder.runs == []
    assert not live._decoding
    await feed(live, 300)  # the speech pauses: that decode is asked at once, and waits
    assert live._decoding is not None
    others.open()
    assert await busy == "gate"
    text = await live.finish()
    assert text == TEXT
    assert [background for *_, background in decoder.runs] == [False]
    # The pause's decode went before the background decode that was waiting longer.
    assert decoder.runs[0][1] <= await queued_step


async def test_the_pause_and_final_decodes_are_urgent_the_steps_background() -> None:
    decoder = FakeDecoder()
    speech = speech_then_silence(900)
    live = IncrementalTranscription(decoder, speech, step_ms=300)
    await feed(live, 1100)
    await asyncio.sleep(0.05)
    await live.finish()
    assert decoder.background[:-1] == [True] * (len(decoder.background) - 1)
    assert decoder.background[-1] is False  # the pause's, which covered all the speech


class Gate:
    def __init__(self) -> None:
        self._open = threading.Event()

    def run(self, _stop: StopFlag) -> str:
        self._open.wait(5.0)
        return "gate"

    def open(self) -> None:
        self._open.set()


async def test_the_first_step_decode_waits_from_the_turns_start_for_the_engines_decode_time() -> (
    None
):
    """The lane was idle long before the turn; the engine's last decode took 0.1 s: the first
    step decode waits until 0.3 s after the turn's start, though a step of audio came sooner."""
    decoder = LaneDecoder(0.01)
    await asyncio.sleep(0.5)  # idle before the turn
    live = IncrementalTranscription(
        decoder, speech_always, idle_for=decoder.lane.idle_for, decode_s=0.1, step_ms=100
    )
    began = time.monotonic()
    await feed(live, 2000)  # 0.4 s
    await live.finish()
    assert decoder.runs[0][2] is True  # a step decode
    assert decoder.runs[0][0] - began >= IDLE_RATIO * 0.1 - 0.01


async def test_a_final_decode_goes_before_other_sessions_step_decodes() -> None:
    """Several sessions on one Whisper: a user who has stopped waits for no other user's
    partial transcript, only for the decode already running (it cannot be interrupted)."""
    lane = InferenceLane("stt")
    running = Gate()
    first = asyncio.create_task(lane.run(running.run, priority=BACKGROUND))  # a step, running
    talking = LaneDecoder(0.01, lane)
    other = IncrementalTranscription(talking, Speech(), idle_for=lambda: 10.0, step_ms=100)
    await feed(other, 200)  # its step decode is asked for, and waits
    assert other._decoding is not None
    stopped = LaneDecoder(0.01, lane)
    mine = IncrementalTranscription(stopped, Speech(), idle_for=lane.idle_for, step_ms=10_000)
    await feed(mine, 1200)
    final = asyncio.create_task(mine.finish())  # asked for after the other's step
    await asyncio.sleep(0.05)
    assert stopped.runs == talking.runs == []
    running.open()
    assert await first == "gate"
    assert await final == TEXT
    await other.finish()
    assert stopped.runs[0][2] is False
    assert talking.runs[0][2] is True
    assert stopped.runs[0][1] <= talking.runs[0][0]  # the final decode went first
    await other.aclose()
    await mine.aclose()


async def test_a_step_decode_still_waiting_for_the_lane_is_dropped_at_the_stop() -> None:
    """With several sessions a step decode may wait behind other sessions' decodes; once the
    user stops it is of no use, and the final decode goes in its place."""
    lane = InferenceLane("stt")
    running = Gate()
    first = asyncio.create_task(lane.run(running.run))  # another session's decode
    decoder = LaneDecoder(0.01, lane)
    live = IncrementalTranscription(decoder, Speech(), idle_for=lambda: 10.0, step_ms=1000)
    await feed(live, 1200)  # a step decode asked for at 1 s, waiting
    assert live._decoding is not None
    final = asyncio.create_task(live.finish())
    await asyncio.sleep(0.05)
    running.open()
    assert await first == "gate"
    assert await final == TEXT
    assert [background for *_, background in decoder.runs] == [False]  # the final decode only
    await live.aclose()
