"""The three adapter protocols, and the live ones some speech-to-text providers add. Each is
streaming-first and cancellable.

Cancelling the task that iterates a stream must close the provider's stream: implementations
release what they hold in ``try/finally`` (or ``async with``) inside their generators, and the
session closes every generator it opens with ``aclosing``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from voice_fsm.errors import VoiceError
from voice_fsm.vad_events import VadEvent

PCM_SAMPLE_RATE = 24_000
"""Every adapter speaks PCM16 little-endian mono at this rate, both ways."""


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    text: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    text: str


TranscriptEvent = TranscriptDelta | TranscriptDone


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the language model may call: its name, what it does, and its arguments as a
    JSON Schema object (the shape every provider's function tools take)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the language model asked for. `arguments` is the JSON text it wrote, unchecked:
    it may be invalid, or not match the tool's schema."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation. An assistant message may carry the tool calls the model
    asked for (its `content` then the text it wrote before them, maybe empty); a `tool`
    message is the result of one call, `tool_call_id` naming it."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


ReplyEvent = str | ToolCall
"""What a language model streams: text deltas, and tool calls, each once complete."""


@runtime_checkable
class SpeechToText(Protocol):
    provider: str
    model: str

    def transcribe(
        self, pcm: bytes, *, language: str | None = None
    ) -> AsyncIterator[TranscriptEvent]:
        """Transcribe a completed recording of PCM16 24 kHz mono.

        Yields any number of deltas, then exactly one `TranscriptDone`.
        Raises `ProviderError` (stage stt) on failure.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LanguageModel(Protocol):
    provider: str
    model: str

    def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ReplyEvent]:
        """Stream the assistant's reply to `messages` (system prompt first): text deltas, and
        when `tools` are offered, the `ToolCall`s the model makes, each yielded once its
        arguments are complete (after any text the model wrote before it). A model that
        calls no tool streams text only.

        Raises `ProviderError` (stage llm) on failure.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TextToSpeech(Protocol):
    provider: str
    model: str

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """Speak `text`, yielding PCM16 24 kHz mono chunks as they are produced.

        Chunks may have any length, even an odd one: the session re-frames them.
        Raises `ProviderError` (stage tts) on failure.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ReportsSpokenText(Protocol):
    """A text-to-speech adapter that can tell when it spoke something other than the text
    (a conversational model asked to read it verbatim may answer or paraphrase instead)."""

    def synthesize_reporting(
        self, text: str, *, voice: str | None = None, spoken_instead: Callable[[str], None]
    ) -> AsyncIterator[bytes]:
        """`synthesize`, calling `spoken_instead` with what was actually spoken when the
        provider's account of its speech diverges from `text`: at most once, after the last
        chunk and before the stream ends. A faithful reading does not call it."""
        ...


@runtime_checkable
class Startable(Protocol):
    """An adapter with something to prepare once the event loop runs, before the first
    request: opening a provider's connection ahead of time, say."""

    async def start(self) -> None:
        """Begin preparing and return at once; never raises (failures are logged)."""
        ...


@runtime_checkable
class Preparable(Protocol):
    """An adapter that can get ready while the user is still talking: a turn has begun and
    will need it in a moment."""

    def prepare(self) -> None:
        """Begin getting ready in the background and return at once; never raises."""
        ...


@runtime_checkable
class LiveTranscription(Protocol):
    """One turn's audio, transcribed while it is being recorded."""

    async def append(self, pcm: bytes) -> None:
        """More PCM16 24 kHz mono of the turn; cheap, never waits for the transcription."""
        ...

    def deltas(self) -> AsyncIterator[TranscriptDelta]:
        """Transcript pieces as they are recognised, while the user is still talking.

        Ends when `finish` has the final transcript or the transcription is closed.
        """
        ...

    async def finish(self) -> str:
        """The turn's audio is complete: return the final transcript (may be empty).

        Raises `ProviderError` (stage stt) on failure.
        """
        ...

    async def aclose(self) -> None:
        """Stop and release everything; safe to call at any time, more than once."""
        ...


@runtime_checkable
class LiveSpeechToText(Protocol):
    """A speech-to-text that can also transcribe a turn while it is being recorded.

    Providers without it are used through `SpeechToText.transcribe` on the completed
    recording instead.
    """

    async def start_live(self, *, language: str | None = None) -> LiveTranscription:
        """Open a live transcription for one turn. Raises `ProviderError` if it cannot."""
        ...


@runtime_checkable
class TurnDetector(Protocol):
    """Voice activity detection over one continuous audio stream (hands-free mode): the
    embedded Silero VAD decides as each frame comes (`feed` returns its events), a provider's
    own detection decides later (its events come through `events`, each with the provider's
    `item`, whose transcription it also gives: that turn needs no speech-to-text of its own)."""

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """More of the stream (PCM16 24 kHz mono); the events decided by it at once. Cheap:
        never waits for a provider."""
        ...

    def events(self) -> AsyncIterator[VadEvent]:
        """The events decided later, at positions of the stream since it was opened. Ends when
        the detector fails (`error` says why) or is closed; at once for one that decides in
        `feed`."""
        ...

    def transcription(self, item: str) -> LiveTranscription:
        """The transcript of the speech `item` (an event's): deltas while it is spoken, then
        `finish`."""
        ...

    @property
    def error(self) -> VoiceError | None:
        """Why the detector stopped, once it has failed."""
        ...

    async def aclose(self) -> None:
        """Stop and release everything; safe to call at any time, more than once."""
        ...
