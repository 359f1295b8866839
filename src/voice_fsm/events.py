"""WebSocket protocol v1: the JSON messages each way, as pydantic models.

Client and server messages are discriminated unions on `type`, so parsing, serialisation and
the JSON Schema in docs/ all come from these classes. Audio travels as binary frames of raw
PCM16 LE mono at 24 kHz and has no model here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from voice_fsm.errors import ErrorCode, Stage

Mode = Literal["push_to_talk", "hands_free"]
StateName = Literal["idle", "recording", "transcribing", "thinking", "speaking"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- client -> server


class SessionConfig(_Message):
    instructions: str | None = Field(default=None, max_length=8000)
    voice: str | None = Field(default=None, max_length=100)
    language: str | None = Field(default=None, min_length=2, max_length=16)
    mode: Mode | None = None


class SessionUpdate(_Message):
    type: Literal["session.update"]
    session: SessionConfig


class InputAudioStart(_Message):
    type: Literal["input_audio.start"]
    # On a barge-in: how much of the interrupted reply the client had played.
    played_ms: int | None = Field(default=None, ge=0)


class InputAudioStop(_Message):
    type: Literal["input_audio.stop"]


class ResponseCancel(_Message):
    type: Literal["response.cancel"]
    played_ms: int | None = Field(default=None, ge=0)


class ConversationClear(_Message):
    type: Literal["conversation.clear"]


ClientEvent = Annotated[
    SessionUpdate | InputAudioStart | InputAudioStop | ResponseCancel | ConversationClear,
    Field(discriminator="type"),
]
client_event_adapter: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


# ---------------------------------------------------------------- server -> client


class AudioFormat(_Message):
    encoding: Literal["pcm16le"] = "pcm16le"
    sample_rate: int = 24_000
    channels: int = 1


class StageInfo(_Message):
    provider: str
    model: str


class SessionCreated(_Message):
    type: Literal["session.created"] = "session.created"
    session_id: str
    protocol: int
    input_audio: AudioFormat
    output_audio: AudioFormat
    stt: StageInfo
    llm: StageInfo
    tts: StageInfo
    modes: list[Mode]
    session: SessionConfig


class SessionUpdated(_Message):
    type: Literal["session.updated"] = "session.updated"
    session: SessionConfig


class StateChanged(_Message):
    type: Literal["state"] = "state"
    state: StateName
    previous: StateName
    turn: int


class TranscriptDeltaEvent(_Message):
    type: Literal["transcript.delta"] = "transcript.delta"
    turn: int
    text: str


class TranscriptDoneEvent(_Message):
    type: Literal["transcript.done"] = "transcript.done"
    turn: int
    text: str


class ResponseDelta(_Message):
    type: Literal["response.delta"] = "response.delta"
    turn: int
    text: str


class ResponseDone(_Message):
    type: Literal["response.done"] = "response.done"
    turn: int
    text: str
    interrupted: bool


class AudioStart(_Message):
    type: Literal["audio.start"] = "audio.start"
    turn: int
    sample_rate: int


class AudioDone(_Message):
    type: Literal["audio.done"] = "audio.done"
    turn: int
    bytes: int
    duration_ms: int


class VadSpeechStarted(_Message):
    """Hands-free: voice activity detection heard speech begin at `audio_ms` of the stream."""

    type: Literal["vad.speech_started"] = "vad.speech_started"
    audio_ms: int
    turn: int


class VadSpeechStopped(_Message):
    """Hands-free: the speech ended at `audio_ms` of the stream; the turn is complete."""

    type: Literal["vad.speech_stopped"] = "vad.speech_stopped"
    audio_ms: int
    turn: int


class TurnMetrics(_Message):
    """Milliseconds; None where a stage did not run."""

    type: Literal["turn.metrics"] = "turn.metrics"
    turn: int
    audio_in_ms: int
    stt_ms: int | None
    llm_first_token_ms: int | None
    llm_ms: int | None
    tts_first_audio_ms: int | None
    tts_ms: int | None
    voice_to_voice_ms: int | None


class ErrorEvent(_Message):
    type: Literal["error"] = "error"
    code: ErrorCode
    stage: Stage
    message: str
    retryable: bool
    turn: int


ServerEvent = Annotated[
    SessionCreated
    | SessionUpdated
    | StateChanged
    | TranscriptDeltaEvent
    | TranscriptDoneEvent
    | ResponseDelta
    | ResponseDone
    | AudioStart
    | AudioDone
    | VadSpeechStarted
    | VadSpeechStopped
    | TurnMetrics
    | ErrorEvent,
    Field(discriminator="type"),
]
server_event_adapter: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
