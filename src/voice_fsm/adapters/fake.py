"""Fake adapters with configurable delays and failures, for tests, demos and benchmarks.

They speak the same protocols as the real adapters and count the streams they have open, so
tests can prove that cancelling a session closes every provider stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from voice_fsm.adapters.base import ChatMessage, TranscriptDelta, TranscriptDone, TranscriptEvent
from voice_fsm.audio import SAMPLE_RATE, float_to_pcm16
from voice_fsm.errors import VoiceError
from voice_fsm.settings import FakeSettings


@dataclass
class StreamLedger:
    """How many streams were opened, and how many are still open."""

    opened: int = 0
    open: int = 0
    calls: list[object] = field(default_factory=list)


class FakeSpeechToText:
    provider = "fake"
    model = "fake-stt"

    def __init__(
        self,
        transcript: str = "What is the capital of France?",
        *,
        delay: float = 0.0,
        fail: VoiceError | None = None,
    ) -> None:
        self.transcript = transcript
        self.delay = delay
        self.fail = fail
        self.ledger = StreamLedger()

    async def transcribe(
        self, pcm: bytes, *, language: str | None = None
    ) -> AsyncIterator[TranscriptEvent]:
        self.ledger.opened += 1
        self.ledger.open += 1
        self.ledger.calls.append((len(pcm), language))
        try:
            words = self.transcript.split(" ")
            for index, word in enumerate(words):
                await asyncio.sleep(self.delay / max(len(words), 1))
                if self.fail is not None:
                    raise self.fail
                yield TranscriptDelta(word if index == 0 else " " + word)
            yield TranscriptDone(self.transcript)
        finally:
            self.ledger.open -= 1

    async def aclose(self) -> None:
        return None


class FakeLanguageModel:
    provider = "fake"
    model = "fake-llm"

    def __init__(
        self,
        reply: str = "The capital of France is Paris.",
        *,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        fail: VoiceError | None = None,
        fail_after_tokens: int = 0,
    ) -> None:
        self.reply_text = reply
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.fail = fail
        self.fail_after_tokens = fail_after_tokens
        self.ledger = StreamLedger()

    async def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        self.ledger.opened += 1
        self.ledger.open += 1
        self.ledger.calls.append(list(messages))
        try:
            await asyncio.sleep(self.first_token_delay)
            for index, word in enumerate(self.reply_text.split(" ")):
                if self.fail is not None and index >= self.fail_after_tokens:
                    raise self.fail
                if index:
                    await asyncio.sleep(self.token_delay)
                yield word if index == 0 else " " + word
        finally:
            self.ledger.open -= 1

    async def aclose(self) -> None:
        return None


def tone(duration_ms: int, frequency: float = 220.0, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A quiet sine tone as PCM16 LE mono: recognisable audio with a known length."""
    t = np.arange(duration_ms * sample_rate // 1000, dtype=np.float32) / sample_rate
    return float_to_pcm16(0.2 * np.sin(2 * np.pi * frequency * t))


class FakeTextToSpeech:
    provider = "fake"
    model = "fake-tts"

    def __init__(
        self,
        *,
        ms_per_char: int = 40,
        chunk_ms: int = 100,
        first_audio_delay: float = 0.0,
        chunk_delay: float = 0.0,
        fail: VoiceError | None = None,
        fail_after_chunks: int = 0,
    ) -> None:
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.first_audio_delay = first_audio_delay
        self.chunk_delay = chunk_delay
        self.fail = fail
        self.fail_after_chunks = fail_after_chunks
        self.ledger = StreamLedger()

    def audio_for(self, text: str) -> bytes:
        """The exact PCM this fake speaks for `text`."""
        total_ms = max(len(text), 1) * self.ms_per_char
        return tone(total_ms)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        self.ledger.opened += 1
        self.ledger.open += 1
        self.ledger.calls.append((text, voice))
        try:
            pcm = self.audio_for(text)
            step = self.chunk_ms * SAMPLE_RATE // 1000 * 2
            await asyncio.sleep(self.first_audio_delay)
            for index, offset in enumerate(range(0, len(pcm), step)):
                if self.fail is not None and index >= self.fail_after_chunks:
                    raise self.fail
                if index:
                    await asyncio.sleep(self.chunk_delay)
                yield pcm[offset : offset + step]
        finally:
            self.ledger.open -= 1

    async def aclose(self) -> None:
        return None


def fakes_from_settings(
    settings: FakeSettings,
) -> tuple[FakeSpeechToText, FakeLanguageModel, FakeTextToSpeech]:
    return (
        FakeSpeechToText(settings.transcript, delay=settings.stt_delay),
        FakeLanguageModel(
            settings.reply,
            first_token_delay=settings.llm_first_token_delay,
            token_delay=settings.llm_token_delay,
        ),
        FakeTextToSpeech(
            first_audio_delay=settings.tts_first_audio_delay, chunk_delay=settings.tts_chunk_delay
        ),
    )
