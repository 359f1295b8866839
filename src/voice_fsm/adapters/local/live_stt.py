"""Live transcription with the embedded Whisper: incremental decoding of the growing buffer.

While the user talks, the whole recording so far is decoded again as `step_ms` of new audio
comes in (Whisper has no streaming mode), and as soon as the voice activity detector hears the
speech pause. Words two decodes in a row agree on go out as transcript deltas. When the user
stops, the last decode is the final transcript if it covers all the speech; otherwise the
complete recording is decoded once more. In push-to-talk people release the button a moment
after they finish, so the pause's decode is often done by then.

The decodes after a step are best-effort: they only give deltas, and a decode cannot be
interrupted once it runs (Whisper pads every input to 30 s: on a slow CPU one takes longer than
a step). So a step decode starts only when the engine has been idle, nothing running or
waiting, for `IDLE_RATIO` times as long as a decode takes (this transcription's last, or the
engine's last before it has one), counted from the turn's start at the earliest, and it runs
at background priority: step decodes keep the engine busy a quarter of the time at most. On
a slow machine or with many sessions the deltas come less often, and the engine is most often
free when the pause or the stop comes. No step decode starts while the detector hears
silence: that may be the pause coming. The pause's decode (it may be the final one) and the
final decode do not wait for idleness and go before any background decode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from voice_fsm.adapters.base import TranscriptDelta
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage

SpeechProbabilities = Callable[[bytes], list[float]]
"""A streaming voice activity detector: one probability per 32 ms frame of the audio fed."""
FRAME_BYTES = bytes_for_ms(32)
PAUSE_MS = 96
"""Silence after speech that is worth a decode: the user may be done."""
IDLE_RATIO = 3.0
"""A step decode waits for the engine to be idle this many times a decode's duration."""


class Decode(Protocol):
    def __call__(self, pcm: bytes, *, background: bool) -> asyncio.Task[str]:
        """Start decoding `pcm`; `background`: only for deltas, after any other decode."""
        ...


IdleFor = Callable[[], float | None]
"""Seconds the decoder has had nothing running or waiting; None while it has."""


def stable_prefix(previous: str, current: str) -> str:
    """The words at the start of both hypotheses (compared without case or punctuation)."""

    def norm(word: str) -> str:
        return word.strip(".,!?;:\"'").lower()

    words: list[str] = []
    for old, new in zip(previous.split(), current.split(), strict=False):
        if norm(old) != norm(new):
            break
        words.append(new)
    return " ".join(words)


class IncrementalTranscription:
    """One turn's live transcription by repeated decoding (see the module's docstring)."""

    def __init__(
        self,
        decode: Decode,
        speech: SpeechProbabilities,
        *,
        idle_for: IdleFor | None = None,
        decode_s: float = 0.0,
        step_ms: int = 700,
        threshold: float = 0.5,
    ) -> None:
        """`idle_for`: the decoder's idleness (its lane's); None: the decoder is this
        transcription's alone, idle whenever none of its decodes runs. `decode_s`: how long
        a decode takes (the engine's last), until this transcription has timed its own."""
        self._decode = decode
        self._speech = speech
        self._idle_for = idle_for if idle_for is not None else self._own_idle_for
        self._threshold = threshold
        self._frames = 0
        self._speech_end = 0  # bytes: the end of the last frame that held speech
        self._step = bytes_for_ms(step_ms)
        self._audio = bytearray()
        self._decoding: asyncio.Task[str] | None = None
        self._step_upto: int | None = None  # the audio a step decode being made will cover
        self._decoded_upto = 0  # bytes of audio the last finished decode covered
        self._last_decode_s = decode_s  # how long the last decode took, waiting included
        self._last_done = time.monotonic()  # when it finished (at first: the turn's start)
        self._hypothesis = ""
        self._said = ""  # the text already sent as deltas
        self._deltas: asyncio.Queue[TranscriptDelta | None] = asyncio.Queue()
        self._closed = False
        self._finishing = False

    async def append(self, pcm: bytes) -> None:
        self._audio += pcm
        for probability in self._speech(pcm):
            self._frames += 1
            if probability >= self._threshold:
                self._speech_end = self._frames * FRAME_BYTES
        self._maybe_decode()

    def deltas(self) -> AsyncIterator[TranscriptDelta]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TranscriptDelta]:
        while (delta := await self._deltas.get()) is not None:
            yield delta

    async def finish(self) -> str:
        if self._closed:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "The transcription is closed.", stage=Stage.STT
            )
        # No step decode after this one: the user is done, and a decode of the silence that
        # followed their speech would only delay the transcript.
        self._finishing = True
        step = self._step_upto if self._decoding is not None else None
        if step is not None and not self._covers_speech(step):
            await self._drop_step()
        if self._decoding is not None:
            await self._wait_decode()
        if not self._covers_speech(self._decoded_upto):
            self._start_decode(background=False)
            await self._wait_decode()
        text = self._hypothesis.strip()
        self._say(text)
        self._deltas.put_nowait(None)
        return text

    async def aclose(self) -> None:
        self._closed = True
        if self._decoding is not None and not self._decoding.done():
            self._decoding.cancel()
            await asyncio.wait({self._decoding})
        self._deltas.put_nowait(None)

    def _maybe_decode(self) -> None:
        if self._decoding is not None:
            return
        paused = self._speech_end > 0 and len(self._audio) - self._speech_end >= bytes_for_ms(
            PAUSE_MS
        )
        if paused and not self._covers_speech(self._decoded_upto):
            self._start_decode(background=False)
        elif (
            len(self._audio) - self._decoded_upto >= self._step
            and self._speech_end in (0, self._frames * FRAME_BYTES)  # see below
            and self._may_step()
        ):
            self._start_decode(background=True)

    # No step decode starts in a silence after speech: within PAUSE_MS it may turn out to be
    # the pause, whose decode would then wait for the step's (a decode cannot be interrupted),
    # and a step decode ending there could not stand for the pause's anyway.

    def _covers_speech(self, upto: int) -> bool:
        """Whether a decode of the first `upto` bytes heard all the speech so far.

        The pause after the last speech frame belongs to it: the VAD's probability falls
        before a word's quiet end (the 's' of 'France'), and a step decode that stopped a few
        frames after the last speech frame heard the word cut ('friends')."""
        if upto == 0:
            return False
        return upto >= min(self._speech_end + bytes_for_ms(PAUSE_MS), len(self._audio))

    def _may_step(self) -> bool:
        """A step decode only on a decoder idle for IDLE_RATIO times a decode's duration."""
        idle = self._idle_for()
        if idle is None:
            return False
        idle = min(idle, time.monotonic() - self._last_done)
        return idle >= IDLE_RATIO * self._last_decode_s

    def _own_idle_for(self) -> float | None:
        if self._decoding is not None:
            return None
        return time.monotonic() - self._last_done

    async def _drop_step(self) -> None:
        """Cancel the step decode asked for last: it cannot be the final transcript, and if
        it still waits for the lane (other sessions' decodes go first) it would delay the
        final decode by a whole decode. One already running is waited for all the same."""
        task = self._decoding
        assert task is not None
        task.cancel()
        await asyncio.wait({task})
        if task.cancelled() or task.exception() is not None:
            self._decoding = None
        await asyncio.sleep(0)  # a decode that finished first: let its callback run

    def _start_decode(self, *, background: bool) -> None:
        upto = len(self._audio)
        started = time.monotonic()
        task = self._decode(bytes(self._audio), background=background)
        self._decoding = task
        self._step_upto = upto if background else None
        task.add_done_callback(lambda done: self._decoded(done, upto, started))

    def _decoded(self, task: asyncio.Task[str], upto: int, started: float) -> None:
        if task.cancelled() or task.exception() is not None:
            return  # finish() re-raises it
        self._decoding = None
        self._last_done = time.monotonic()
        self._last_decode_s = self._last_done - started
        previous, self._hypothesis = self._hypothesis, task.result()
        self._decoded_upto = upto
        self._say(stable_prefix(previous, self._hypothesis))
        if not (self._closed or self._finishing):
            self._maybe_decode()

    async def _wait_decode(self) -> None:
        while (task := self._decoding) is not None:
            await asyncio.wait({task})
            if task.cancelled():
                raise asyncio.CancelledError
            task.result()  # a ProviderError of the decode
            await asyncio.sleep(0)  # let the done callback run

    def _say(self, text: str) -> None:
        """Send the part of `text` beyond what was already said, if it continues it."""
        if not text.startswith(self._said) or len(text) <= len(self._said):
            return
        new = text[len(self._said) :]
        self._said = text
        self._deltas.put_nowait(TranscriptDelta(new))
