"""Fake adapters with configurable delays and failures, for tests, demos and benchmarks.

They speak the same protocols as the real adapters and count the streams they have open, so
tests can prove that cancelling a session closes every provider stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from voice_fsm.adapters.base import (
    ChatMessage,
    LiveTranscription,
    ReplyEvent,
    ToolCall,
    ToolSpec,
    TranscriptDelta,
    TranscriptDone,
    TranscriptEvent,
)
from voice_fsm.audio import SAMPLE_RATE, float_to_pcm16
from voice_fsm.errors import VoiceError

if TYPE_CHECKING:
    from voice_fsm.adapters.entry import Build


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


class FakeLiveSpeechToText(FakeSpeechToText):
    """Also transcribes live: one word of the transcript per `ms_per_word` of audio appended,
    and the final transcript `final_delay` seconds after `finish`."""

    def __init__(
        self,
        transcript: str = "What is the capital of France?",
        *,
        ms_per_word: int = 100,
        final_delay: float = 0.0,
        fail_start: VoiceError | None = None,
        fail_finish: VoiceError | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(transcript, **kwargs)
        self.ms_per_word = ms_per_word
        self.final_delay = final_delay
        self.fail_start = fail_start
        self.fail_finish = fail_finish
        self.live: list[FakeLiveTranscription] = []

    async def start_live(self, *, language: str | None = None) -> LiveTranscription:
        if self.fail_start is not None:
            raise self.fail_start
        live = FakeLiveTranscription(self)
        self.live.append(live)
        return live


class FakeLiveTranscription:
    def __init__(self, owner: FakeLiveSpeechToText) -> None:
        self._owner = owner
        self.received = bytearray()
        self.closed = False
        self._words = owner.transcript.split(" ")
        self._said = 0
        self._queue: asyncio.Queue[TranscriptDelta | None] = asyncio.Queue()

    async def append(self, pcm: bytes) -> None:
        self.received += pcm
        heard = len(self.received) // (2 * SAMPLE_RATE * self._owner.ms_per_word // 1000)
        while self._said < min(heard, len(self._words)):
            word = self._words[self._said]
            self._queue.put_nowait(TranscriptDelta(word if self._said == 0 else " " + word))
            self._said += 1

    async def deltas(self) -> AsyncIterator[TranscriptDelta]:
        while (delta := await self._queue.get()) is not None:
            yield delta

    async def finish(self) -> str:
        await asyncio.sleep(self._owner.final_delay)
        if self._owner.fail_finish is not None:
            raise self._owner.fail_finish
        while self._said < len(self._words):  # the words the audio did not reach yet
            word = self._words[self._said]
            self._queue.put_nowait(TranscriptDelta(" " + word if self._said else word))
            self._said += 1
        self._queue.put_nowait(None)
        return self._owner.transcript

    async def aclose(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One reply of a scripted `FakeLanguageModel`: its text, then its tool calls."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


ReplyScript = (
    Sequence[ScriptedReply]
    | Callable[[Sequence[ChatMessage], Sequence[ToolSpec]], ScriptedReply | None]
)
"""The replies in turn, or ``(messages, tools) -> reply``; past the list's end, or when the
callable returns None, the model says its `reply` text."""


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
        script: ReplyScript | None = None,
    ) -> None:
        self.reply_text = reply
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.fail = fail
        self.fail_after_tokens = fail_after_tokens
        self.script = script
        self.ledger = StreamLedger()
        self.tools_offered: list[list[ToolSpec]] = []
        """The tools each `reply` was offered, beside the messages in `ledger.calls`."""

    def _scripted(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> ScriptedReply | None:
        if self.script is None:
            return None
        if callable(self.script):
            return self.script(messages, tools)
        replied = len(self.ledger.calls) - 1  # this call is already in the ledger
        return self.script[replied] if replied < len(self.script) else None

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyEvent]:
        self.ledger.opened += 1
        self.ledger.open += 1
        self.ledger.calls.append(list(messages))
        self.tools_offered.append(list(tools))
        try:
            scripted = self._scripted(messages, tools)
            text = scripted.text if scripted else self.reply_text
            # A scripted reply of only tool calls has no text at all, not one empty delta.
            pieces = text.split(" ") if text or scripted is None else []
            await asyncio.sleep(self.first_token_delay)
            for index, word in enumerate(pieces):
                if self.fail is not None and index >= self.fail_after_tokens:
                    raise self.fail
                if index:
                    await asyncio.sleep(self.token_delay)
                yield word if index == 0 else " " + word
            for call in scripted.tool_calls if scripted else ():
                yield call
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


def speech_to_text(build: Build) -> FakeSpeechToText:
    """Provider ``fake`` of speech-to-text: the same transcript for every turn."""
    fake = build.settings.fake
    return FakeSpeechToText(fake.transcript, delay=fake.stt_delay)


def language_model(build: Build) -> FakeLanguageModel:
    """Provider ``fake`` of the language model: the same reply, token by token."""
    fake = build.settings.fake
    return FakeLanguageModel(
        fake.reply, first_token_delay=fake.llm_first_token_delay, token_delay=fake.llm_token_delay
    )


def text_to_speech(build: Build) -> FakeTextToSpeech:
    """Provider ``fake`` of text-to-speech: a tone as long as the text."""
    fake = build.settings.fake
    return FakeTextToSpeech(
        first_audio_delay=fake.tts_first_audio_delay, chunk_delay=fake.tts_chunk_delay
    )
