"""Voice activity detection: Silero VAD v6 on onnxruntime (no torch), and turn detection on top.

`SileroVad` turns a stream of PCM16 24 kHz chunks of any size into one speech probability per
32 ms frame (512 samples at 16 kHz), carrying the model's state across chunks. `SpeechDetector`
turns those probabilities into `SpeechStarted` / `SpeechStopped` events for hands-free turns.

Both are cheap (about 0.1 ms per 32 ms frame) and synchronous: call them from the event loop.
One `SileroVad` holds one stream's state; several may share one ONNX session
(`load_silero_session()`), which onnxruntime allows to run from several threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime
import soxr

from voice_fsm.adapters.local.models import silero_vad_model
from voice_fsm.audio import BYTES_PER_SAMPLE, SAMPLE_RATE, pcm16_to_float
from voice_fsm.vad_events import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    VadEvent,
)

if TYPE_CHECKING:
    from voice_fsm.adapters.base import LiveTranscription
    from voice_fsm.errors import VoiceError

VAD_SAMPLE_RATE = 16_000
FRAME_SAMPLES = 512
"""Samples per frame at 16 kHz: the only frame size Silero v6 takes at this rate."""
CONTEXT_SAMPLES = 64
"""The end of the previous frame, fed again in front of each frame."""
FRAME_MS = FRAME_SAMPLES * 1000 // VAD_SAMPLE_RATE  # 32
_STATE_SHAPE = (1, 1, 128)


def load_silero_session() -> onnxruntime.InferenceSession:
    """The Silero v6 model in an onnxruntime session on one thread (it is tiny)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(
        str(silero_vad_model()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class SileroVad:
    """Streaming speech probabilities for one audio stream."""

    def __init__(self, session: onnxruntime.InferenceSession | None = None) -> None:
        self._session = session if session is not None else load_silero_session()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: model state, context, resampler and buffered samples."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, VAD_SAMPLE_RATE, 1, dtype="float32")
        self._odd_byte = b""
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames = 0
        """Frames processed since the last reset; frame i covers [32 i, 32 (i + 1)) ms."""

    def probabilities(self, pcm16_24k: bytes) -> list[float]:
        """Feed PCM16 24 kHz mono of any length; one probability per frame completed by it.

        Samples that do not fill a frame yet (and the resampler's short delay) wait for the next
        call, so the frames are the same however the stream is cut into chunks.
        """
        data = self._odd_byte + pcm16_24k
        cut = len(data) - len(data) % BYTES_PER_SAMPLE
        self._odd_byte = data[cut:]
        if cut:
            resampled = self._resampler.resample_chunk(pcm16_to_float(data[:cut]))
            self._pending = np.concatenate([self._pending, resampled])
        count = len(self._pending) // FRAME_SAMPLES
        if count == 0:
            return []
        frames = self._pending[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        self._pending = self._pending[count * FRAME_SAMPLES :]
        return self._run(frames)

    def _run(self, frames: np.ndarray) -> list[float]:
        # Each row gets the last 64 samples of the row before it; the model reads the rows as
        # consecutive frames of one stream and returns the state after the last one.
        previous = np.concatenate([self._context[None, :], frames[:-1, -CONTEXT_SAMPLES:]])
        batch = np.ascontiguousarray(np.concatenate([previous, frames], axis=1))
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        self.frames += len(frames)
        return [float(p) for p in np.asarray(probs).reshape(-1)]


class SpeechDetector:
    """Turn detection with hysteresis over Silero's probabilities.

    Speech starts at a frame at or above `threshold`, once it has lasted `min_speech_ms`
    without a frame below `threshold - 0.15`; a shorter blip is ignored. Speech stops after
    `min_silence_ms` below `threshold - 0.15` without a frame back at `threshold`. Events are
    emitted when decided, so `SpeechStopped` comes `min_silence_ms` after the speech ended; their
    `audio_ms` are positions in the stream fed since the last reset, padded by `speech_pad_ms`.
    In between, the first frame below `threshold - 0.15` is a `SpeechPaused` (at once: the user
    may be done) and a frame back at `threshold` before the stop a `SpeechResumed`.
    """

    def __init__(
        self,
        vad: SileroVad | None = None,
        *,
        threshold: float = 0.5,
        min_silence_ms: int = 500,
        min_speech_ms: int = 250,
        speech_pad_ms: int = 30,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if min_silence_ms < 0 or min_speech_ms < 0 or speech_pad_ms < 0:
            raise ValueError("durations must not be negative")
        self.vad = vad if vad is not None else SileroVad()
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_silence_ms = min_silence_ms
        self.min_speech_ms = min_speech_ms
        self.speech_pad_ms = speech_pad_ms
        self.reset()

    @property
    def speaking(self) -> bool:
        """Whether `SpeechStarted` was emitted and its `SpeechStopped` was not yet."""
        return self._speaking

    def reset(self) -> None:
        self.vad.reset()
        self._speaking = False
        self._onset_ms: int | None = None  # a candidate start, not yet confirmed
        self._silence_from_ms: int | None = None  # where the current run of silence began

    def feed(self, pcm16_24k: bytes) -> list[VadEvent]:
        """Feed PCM16 24 kHz mono of any length; the events decided by it, in order."""
        start_frame = self.vad.frames
        events: list[VadEvent] = []
        for index, prob in enumerate(self.vad.probabilities(pcm16_24k), start_frame):
            event = self._step(prob, index * FRAME_MS)
            if event is not None:
                events.append(event)
        return events

    # The rest of `TurnDetector`: this detector decides everything in `feed`.

    async def events(self) -> AsyncIterator[VadEvent]:
        return
        yield  # an async generator with nothing to give

    def transcription(self, item: str) -> LiveTranscription:
        raise LookupError(f"the embedded VAD has no transcript of {item!r}")

    @property
    def error(self) -> VoiceError | None:
        return None

    async def aclose(self) -> None:
        """Nothing to release: the model is shared."""

    def _step(self, prob: float, frame_ms: int) -> VadEvent | None:
        end_ms = frame_ms + FRAME_MS
        if not self._speaking:
            if self._onset_ms is None:
                if prob >= self.threshold:
                    self._onset_ms = frame_ms
            elif prob < self.neg_threshold:
                self._onset_ms = None
            if self._onset_ms is not None and end_ms - self._onset_ms >= self.min_speech_ms:
                self._speaking = True
                self._silence_from_ms = None
                return SpeechStarted(max(0, self._onset_ms - self.speech_pad_ms))
            return None
        heard: VadEvent | None = None
        if prob >= self.threshold:
            if self._silence_from_ms is not None:
                heard = SpeechResumed(frame_ms)
            self._silence_from_ms = None
        elif prob < self.neg_threshold and self._silence_from_ms is None:
            self._silence_from_ms = frame_ms
            heard = SpeechPaused(frame_ms)
        if self._silence_from_ms is not None and end_ms - self._silence_from_ms >= max(
            self.min_silence_ms, FRAME_MS
        ):
            # The end's padding is audio already heard: never more than the silence waited for.
            stop_ms = self._silence_from_ms + min(self.speech_pad_ms, self.min_silence_ms)
            self._speaking = False
            self._onset_ms = None
            self._silence_from_ms = None
            return SpeechStopped(stop_ms)
        return heard
