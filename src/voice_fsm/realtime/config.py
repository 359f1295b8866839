"""A Realtime session's configuration as voice-fsm applies it, and `session.update` turned into
the session core's commands.

What the session does not apply is not echoed: `session.updated` shows the configuration in
effect. Supported: `instructions`, `output_modalities` (`audio` or `text`),
`audio.input.turn_detection` (`server_vad`, `semantic_vad` applied as `server_vad`, or null:
the client commits), `audio.output.voice`, and the one audio format (`audio/pcm` at 24 kHz);
another format, or a transcription session, refuses the whole update. An update merges into
the session in effect: what it leaves out stays (the Agents SDK's `{type, model, tracing}`
keeps the instructions and tools); `tracing`, `prompt`, `max_output_tokens`, the input's
`transcription` and `noise_reduction` are accepted and ignored, so not echoed. On a server
without a detector, turn detection is applied as null (the rest of the update applied, an
`error` saying why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from openai.types.realtime import (
    RealtimeAudioConfig,
    RealtimeAudioConfigInput,
    RealtimeAudioConfigOutput,
    RealtimeFunctionTool,
    RealtimeSessionCreateRequest,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_audio_formats import AudioPCM
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad
from pydantic import ValidationError

from voice_fsm.adapters.base import TextToSpeech
from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.events import ClientTool, ReplyPolicy, SessionConfig, SessionUpdate
from voice_fsm.realtime.wire import EventError, new_id

Modality = Literal["text", "audio"]
PCM = AudioPCM(type="audio/pcm", rate=SAMPLE_RATE)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RealtimeConfig:
    model: str
    instructions: str
    voice: str | None
    turn_detection: ServerVad | None = None
    output_modalities: list[Modality] = field(default_factory=lambda: ["audio"])
    tools: tuple[RealtimeFunctionTool, ...] = ()
    own_voice: str | None = None
    """The voice the text-to-speech speaks with whatever the session asks (the embedded
    engine's one Piper voice), reported instead of the one asked for; None: it takes that."""

    @property
    def speak(self) -> bool:
        return "audio" in self.output_modalities

    def policy(self) -> ReplyPolicy:
        """How the session core replies under this configuration."""
        vad = self.turn_detection
        auto = vad is not None and vad.create_response is not False
        return ReplyPolicy(auto=auto, speak=self.speak)

    def session(self) -> RealtimeSessionCreateRequest:
        output = RealtimeAudioConfigOutput(format=PCM, voice=self.own_voice or self.voice)
        return RealtimeSessionCreateRequest(
            type="realtime",
            model=self.model,
            instructions=self.instructions,
            output_modalities=list(self.output_modalities),
            tools=list(self.tools) or None,
            tool_choice="auto" if self.tools else None,
            audio=RealtimeAudioConfig(
                input=RealtimeAudioConfigInput(format=PCM, turn_detection=self.turn_detection),
                output=output,
            ),
        )

    def created(self) -> str:
        return _session_event(
            SessionCreatedEvent(
                type="session.created", event_id=new_id("event"), session=self.session()
            )
        )

    def updated(self) -> str:
        return _session_event(
            SessionUpdatedEvent(
                type="session.updated", event_id=new_id("event"), session=self.session()
            )
        )


def own_voice(tts: TextToSpeech) -> str | None:
    """The voice `tts` speaks with whatever it is asked: the embedded engine's Piper voice
    (its model's name, not the path it was loaded from); None for the providers that take the
    session's voice (OpenAI's, a compatible server, the fakes)."""
    if tts.provider == "local":
        return tts.model.removeprefix("piper ")
    return None


def _session_event(event: SessionCreatedEvent | SessionUpdatedEvent) -> str:
    """The event's JSON, with `turn_detection` null when it is off (left out, a client could
    not tell it from the API's default)."""
    data: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    data["session"]["audio"]["input"].setdefault("turn_detection", None)
    return json.dumps(data, separators=(",", ":"))


def apply(
    config: RealtimeConfig, request: object, event_id: str | None
) -> tuple[RealtimeConfig, SessionUpdate]:
    """`config` with `request` (a `session.update`'s session) applied, and the session core's
    update; raises `EventError` (and changes nothing) for what cannot be applied."""
    if not isinstance(request, RealtimeSessionCreateRequest):
        raise EventError(
            "Only realtime sessions are served here, not transcription sessions.",
            code="unsupported_session_type",
            param="session.type",
            event_id=event_id,
        )
    changes: dict[str, Any] = {}
    if request.instructions is not None:
        changes["instructions"] = request.instructions
    if request.output_modalities:
        changes["output_modalities"] = ["audio" if "audio" in request.output_modalities else "text"]
    audio = request.audio
    if audio is not None and audio.input is not None:
        _check_format(audio.input.format, "session.audio.input.format", event_id)
        if "turn_detection" in audio.input.model_fields_set:
            vad = audio.input.turn_detection
            changes["turn_detection"] = None if vad is None else _as_server_vad(vad)
    if audio is not None and audio.output is not None:
        _check_format(audio.output.format, "session.audio.output.format", event_id)
        voice = audio.output.voice
        if voice is not None:
            changes["voice"] = voice if isinstance(voice, str) else voice.id
    if request.tool_choice not in (None, "auto"):
        raise EventError(
            "Only tool_choice 'auto' is supported: the model chooses.",
            code="unsupported_value",
            param="session.tool_choice",
            event_id=event_id,
        )
    if request.tools is not None:
        changes["tools"] = tuple(_function_tools(request.tools, event_id))
    applied = replace(config, **changes)
    try:
        core = SessionConfig(
            instructions=applied.instructions,
            voice=applied.voice,
            mode="push_to_talk" if applied.turn_detection is None else "hands_free",
            tools=None if request.tools is None else [_client_tool(t) for t in applied.tools],
        )
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = f"session.{first['loc'][0]}" if first["loc"] else "session"
        raise EventError(
            f"Invalid value for '{param}': {first['msg']}.",
            code="invalid_value",
            param=param,
            event_id=event_id,
        ) from None
    return applied, SessionUpdate(type="session.update", session=core)


def without_turn_detection(
    applied: RealtimeConfig, update: SessionUpdate
) -> tuple[RealtimeConfig, SessionUpdate]:
    """`apply`'s result with turn detection off: the client commits."""
    core = update.session.model_copy(update={"mode": "push_to_talk"})
    return replace(applied, turn_detection=None), update.model_copy(update={"session": core})


def _function_tools(tools: list[Any], event_id: str | None) -> list[RealtimeFunctionTool]:
    """The client's function tools; an MCP tool is refused (remote MCP servers are the
    operator's, `VOICE_FSM_TOOLS__MCP_SERVERS`)."""
    for position, tool in enumerate(tools):
        if not isinstance(tool, RealtimeFunctionTool) or not tool.name:
            raise EventError(
                "Only function tools with a name are supported here; MCP servers are the "
                "server operator's.",
                code="unsupported_value",
                param=f"session.tools[{position}]",
                event_id=event_id,
            )
    return tools


def _client_tool(tool: RealtimeFunctionTool) -> ClientTool:
    parameters = tool.parameters if isinstance(tool.parameters, dict) else None
    return ClientTool(
        name=tool.name or "",
        description=tool.description or "",
        parameters=parameters or {"type": "object", "properties": {}},
    )


def _check_format(value: object, param: str, event_id: str | None) -> None:
    if value is None:
        return
    if isinstance(value, AudioPCM) and value.rate in (None, SAMPLE_RATE):
        return
    raise EventError(
        f"Only audio/pcm at {SAMPLE_RATE} Hz is supported.",
        code="unsupported_audio_format",
        param=param,
        event_id=event_id,
    )


def _as_server_vad(vad: object) -> ServerVad:
    """Server VAD with the client's choice of an automatic response; the detector's own
    thresholds are the server's settings (not echoed as if applied). `interrupt_response` is
    always true: speech over a reply is a barge-in that cancels it (the Agents SDK reads this
    to know it need not send `response.cancel` itself)."""
    create = getattr(vad, "create_response", None)
    return ServerVad(type="server_vad", create_response=create, interrupt_response=True)
