"""WebSocket protocol v1: the JSON messages each way, as pydantic models.

Client and server messages are discriminated unions on `type`, so parsing, serialisation and
the JSON Schema in docs/ all come from these classes. Audio travels as binary frames of raw
PCM16 LE mono at 24 kHz and has no model here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, field_validator

from voice_fsm import PROTOCOL_VERSION
from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.errors import ErrorCode, Stage
from voice_fsm.machine import Pipeline, State
from voice_fsm.protocol_base import Message

# Re-exported: every protocol message can be imported from here.
from voice_fsm.tool_events import MAX_CLIENT_TOOLS as MAX_CLIENT_TOOLS
from voice_fsm.tool_events import ClientTool as ClientTool
from voice_fsm.tool_events import ToolCallEvent as ToolCallEvent
from voice_fsm.tool_events import ToolCancelled as ToolCancelled
from voice_fsm.tool_events import ToolResultCommand as ToolResultCommand
from voice_fsm.tool_events import ToolResultEvent as ToolResultEvent
from voice_fsm.tool_events import ToolTiming as ToolTiming

Mode = Literal["push_to_talk", "hands_free"]
PipelineName = Pipeline
"""cascade: speech-to-text, language model, text-to-speech; speech-to-speech: a Realtime model
hears the user's audio and answers aloud."""
StateName = State
"""A state of the session's machine: the table in machine.py is the one list of them."""


_Message = Message


# ---------------------------------------------------------------- client -> server


class SessionConfig(_Message):
    instructions: str | None = Field(default=None, max_length=8000)
    voice: str | None = Field(default=None, max_length=100)
    language: str | None = Field(default=None, min_length=2, max_length=16)
    mode: Mode | None = None
    pipeline: PipelineName | None = None
    tools: list[ClientTool] | None = Field(default=None, max_length=MAX_CLIENT_TOOLS)

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, value: list[ClientTool] | None) -> list[ClientTool] | None:
        names = [tool.name for tool in value or []]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        return value


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


# ---------------------------------------------------------------- commands of other front ends
# Not protocol v1 messages: what a front end speaking another protocol (the Realtime API) asks
# of the same session core.


class ReplyPolicy(_Message):
    """How the session replies: at once when a turn is transcribed (`auto`), or only when
    asked (`ReplyCreate`); spoken, or as text only (`speak`)."""

    type: Literal["reply.policy"] = "reply.policy"
    auto: bool = True
    speak: bool = True


class ReplyCreate(_Message):
    """Reply now to the conversation as it stands, or to the turn being transcribed once its
    transcript is in; spoken or as text only, with its own `instructions` (else the
    session's), and `out_of_band`: the reply is not added to the history."""

    type: Literal["reply.create"] = "reply.create"
    speak: bool = True
    instructions: str | None = Field(default=None, max_length=8000)
    out_of_band: bool = False


ClientEvent = Annotated[
    SessionUpdate
    | InputAudioStart
    | InputAudioStop
    | ResponseCancel
    | ConversationClear
    | ToolResultCommand,
    Field(discriminator="type"),
]
client_event_adapter: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


# ---------------------------------------------------------------- server -> client


class AudioFormat(_Message):
    encoding: Literal["pcm16le"] = "pcm16le"
    sample_rate: int = SAMPLE_RATE
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
    pipelines: list[PipelineName] = Field(default=["cascade"])
    """The pipelines a client may pick (`SessionConfig.pipeline`)."""
    s2s: StageInfo | None = None
    """Speech-to-speech mode's provider and model, when it can run."""


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
    tools: list[ToolTiming] = Field(default_factory=list)
    """Each tool call of the turn that ended, in order."""


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
    | ToolCallEvent
    | ToolResultEvent
    | ToolCancelled
    | ErrorEvent,
    Field(discriminator="type"),
]
server_event_adapter: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


def session_created(
    session_id: str,
    stages: dict[str, dict[str, str]],
    hands_free: bool,
    config: SessionConfig,
    speech: dict[str, str] | None = None,
) -> SessionCreated:
    """The first event of a session: its stages' providers and models, and what it offers."""
    return SessionCreated(
        session_id=session_id,
        protocol=PROTOCOL_VERSION,
        input_audio=AudioFormat(),
        output_audio=AudioFormat(),
        stt=StageInfo(**stages["stt"]),
        llm=StageInfo(**stages["llm"]),
        tts=StageInfo(**stages["tts"]),
        modes=["push_to_talk", "hands_free"] if hands_free else ["push_to_talk"],
        pipelines=["cascade", "speech-to-speech"] if speech else ["cascade"],
        s2s=StageInfo(**speech) if speech else None,
        session=config,
    )
