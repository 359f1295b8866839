"""Live transcription with the embedded Whisper: incremental decoding of the growing buffer.

While the user talks, the whole recording so far is decoded again each time `step_ms` of new
audio has come in (Whisper has no streaming mode, and tiny.en decodes a few seconds in a few
hundred milliseconds), and as soon as the voice activity detector hears the speech pause.
Words two decodes in a row agree on go out as transcript deltas. When the user stops, the last
decode is the final transcript if it covers all the speech; otherwise the complete recording
is decoded once more. In push-to-talk people release the button a moment after they finish,
so the final decode is usually done by then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from voice_fsm.adapters.base import TranscriptDelta
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage

SpeechProbabilities = Callable[[bytes], list[float]]
"""A streaming voice activity detector: one probability per 32 ms frame of the audio fed."""
FRAME_BYTES = bytes_for_ms(32)
PAUSE_MS = 96
"""Silence after speech that is worth a decode: the user may be done."""


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
        decode: Callable[[bytes], asyncio.Task[str]],
        speech: SpeechProbabilities,
        *,
        step_ms: int = 700,
        threshold: float = 0.5,
    ) -> None:
        self._decode = decode
        self._speech = speech
        self._threshold = threshold
        self._frames = 0
        self._speech_end = 0  # bytes: the end of the last frame that held speech
        self._step = bytes_for_ms(step_ms)
        self._audio = bytearray()
        self._decoding: asyncio.Task[str] | None = None
        self._decoded_upto = 0  # bytes of audio the last finished decode covered
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
        if self._decoding is not None:
            await self._wait_decode()
        if self._decoded_upto == 0 or self._decoded_upto < self._speech_end:
            self._start_decode()
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
        new = len(self._audio) - self._decoded_upto
        paused = self._decoded_upto < self._speech_end and len(
            self._audio
        ) - self._speech_end >= bytes_for_ms(PAUSE_MS)
        if new >= self._step or paused:
            self._start_decode()

    def _start_decode(self) -> None:
        upto = len(self._audio)
        task = self._decode(bytes(self._audio))
        self._decoding = task
        task.add_done_callback(lambda done: self._decoded(done, upto))

    def _decoded(self, task: asyncio.Task[str], upto: int) -> None:
        if task.cancelled() or task.exception() is not None:
            return  # finish() re-raises it
        self._decoding = None
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
