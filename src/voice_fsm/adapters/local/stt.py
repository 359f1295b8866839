"""Speech-to-text in process: faster-whisper (CTranslate2) on the CPU, Whisper base by default.

The model is loaded once and shared by every session; each transcription runs in a worker thread
of the adapter's `InferenceLane`, so the event loop stays free and at most the lane's
concurrency of transcriptions run at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from functools import partial
from typing import Any, cast

import numpy as np
from faster_whisper import WhisperModel

from voice_fsm.adapters.base import (
    PCM_SAMPLE_RATE,
    LiveTranscription,
    TranscriptDelta,
    TranscriptDone,
    TranscriptEvent,
)
from voice_fsm.adapters.local.live_stt import IncrementalTranscription
from voice_fsm.adapters.local.models import whisper_model
from voice_fsm.adapters.local.runtime import (
    BACKGROUND,
    URGENT,
    Cancelled,
    InferenceLane,
    StopFlag,
)
from voice_fsm.adapters.local.whisper_window import fits_window, transcribe_window
from voice_fsm.audio import pcm16_to_float, resample
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import LocalSettings

WHISPER_SAMPLE_RATE = 16_000
WARM_UP_SECONDS = 1.0


def model_label(name: str) -> str:
    """The name reported as `model`: ``whisper-tiny.en`` for a Whisper size, else `name`."""
    if name.startswith("whisper-") or os.sep in name or "/" in name:
        return name
    return f"whisper-{name}"


class WhisperSpeechToText:
    provider = "local"

    def __init__(self, settings: LocalSettings, lane: InferenceLane | None = None) -> None:
        self.model = model_label(settings.stt_model)
        self._settings = settings
        self._lane = lane if lane is not None else InferenceLane("stt")
        self._whisper: WhisperModel | None = WhisperModel(
            whisper_model(settings.stt_model, settings.model_cache),
            device="cpu",
            compute_type="int8",
            cpu_threads=settings.threads,
        )
        # English-only models (*.en) are told their language rather than left to detect it.
        self._english_only = not self._whisper.model.is_multilingual
        self._short_window = (
            settings.stt_short_window
            if settings.stt_short_window is not None
            else "tiny" not in self.model
        )
        self._vad_model: Any = None  # Silero, loaded on the first live transcription

    def warm_up(self) -> None:
        """Transcribe a second of faint noise, so the first user's turn is not the slow one."""
        noise = np.random.default_rng(0).normal(
            0.0, 0.01, int(WARM_UP_SECONDS * WHISPER_SAMPLE_RATE)
        )
        self.transcribe_sync(noise.astype(np.float32))

    def transcribe_sync(self, samples_16k: np.ndarray, *, language: str | None = None) -> str:
        """The transcript of float32 16 kHz mono samples, in the calling thread."""
        return "".join(self._segments(samples_16k, language, StopFlag())).strip()

    async def transcribe(
        self, pcm: bytes, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """One delta per decoded segment (a 30 s window without timestamps), then the text.

        Cancelling the consumer stops the worker between segments; the lane stays taken until
        it has (a segment cannot be interrupted).
        """
        parts: list[str] = []
        # aclosing: a consumer that closes this generator early stops the worker at once.
        # (`InferenceLane.stream` is an async generator, annotated as an iterator.)
        texts = cast(
            AsyncGenerator[str, None],
            self._lane.stream(partial(self._pcm_segments, pcm, language)),
        )
        async with aclosing(texts):
            async for text in texts:
                parts.append(text)
                yield TranscriptDelta(text)
        yield TranscriptDone("".join(parts).strip())

    def _pcm_segments(self, pcm: bytes, language: str | None, stop: StopFlag) -> Iterator[str]:
        # Resampled in the worker too: a minute of audio takes a few milliseconds.
        samples = resample(pcm16_to_float(pcm), PCM_SAMPLE_RATE, WHISPER_SAMPLE_RATE)
        return self._segments(samples, language, stop)

    def _segments(self, samples: np.ndarray, language: str | None, stop: StopFlag) -> Iterator[str]:
        """The text of each decoded segment, without empty ones; the first without its space."""
        whisper = self._whisper
        if whisper is None:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "The speech-to-text model is closed.", stage=Stage.STT
            )
        first = True
        language = language or ("en" if self._english_only else None)
        try:
            stop.check()
            if self._short_window and fits_window(samples):
                # A spoken turn: one decode on a window cut to its length (whisper_window.py).
                for text in transcribe_window(
                    whisper, samples, language, self._settings.stt_beam_size
                ):
                    yield text.lstrip() if first else text
                    first = False
                return
            # Computes the features now; each step of `segments` then decodes one 30 s window.
            segments, _info = whisper.transcribe(
                samples,
                language=language,
                beam_size=self._settings.stt_beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            decoded = iter(segments)
            while True:
                stop.check()
                segment = next(decoded, None)
                if segment is None:
                    return
                text = segment.text.lstrip() if first else segment.text
                if text.strip():
                    first = False
                    yield text
        except Cancelled:
            raise
        except Exception as err:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"Speech-to-text failed: {err}", stage=Stage.STT
            ) from err

    async def start_live(self, *, language: str | None = None) -> LiveTranscription:
        """Transcribe a turn while it is recorded, by decoding the growing buffer again."""
        if self._vad_model is None:
            from voice_fsm.vad import load_silero_session

            self._vad_model = load_silero_session()
        model = self._vad_model

        def decode(pcm: bytes, *, background: bool) -> asyncio.Task[str]:
            def run(stop: StopFlag) -> str:
                return "".join(self._pcm_segments(pcm, language, stop)).strip()

            priority = BACKGROUND if background else URGENT
            return asyncio.ensure_future(self._lane.run(run, priority=priority))

        from voice_fsm.vad import SileroVad

        return IncrementalTranscription(
            decode,
            SileroVad(model).probabilities,
            idle_for=self._lane.idle_for,
            decode_s=self._lane.last_run_s,
        )

    async def aclose(self) -> None:
        # CTranslate2 frees the model when the last reference goes; a running worker keeps it.
        self._whisper = None
