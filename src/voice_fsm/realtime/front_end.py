"""`/v1/realtime`: the Realtime API's client events turned into the session core's commands,
and the core's events rendered back (`render.py`).

With turn detection off, the client's appended audio waits here, bounded by the longest turn
the server accepts, until it commits: the commit becomes one push-to-talk turn (start, the
audio, stop) whose reply waits for `response.create`. With `server_vad` the audio goes to the
session's hands-free detector as it comes, and each turn it detects is answered at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from openai.types.realtime import (
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemRetrieveEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    SessionUpdateEvent,
)

from voice_fsm.audio import bytes_for_ms, duration_ms
from voice_fsm.connection import ClientConnection
from voice_fsm.events import (
    InputAudioStart,
    InputAudioStop,
    ReplyCreate,
    ReplyPolicy,
    ResponseCancel,
    ServerEvent,
    StateChanged,
)
from voice_fsm.machine import State
from voice_fsm.realtime import config as session_config
from voice_fsm.realtime.config import RealtimeConfig
from voice_fsm.realtime.items import Items
from voice_fsm.realtime.rate_limits import EventPace
from voice_fsm.realtime.render import Renderer
from voice_fsm.realtime.wire import EventError, dump, new_id, parse
from voice_fsm.settings import Settings

if TYPE_CHECKING:
    from voice_fsm.session import Session

MAX_EVENT_BYTES = 1024 * 1024
"""The largest client event: an append of about 16 s of audio, base64-encoded."""
CHUNK = bytes_for_ms(100)
"""A commit's audio goes to the session in pieces of this size, as a live client's would."""
DEFAULT_MODEL = "voice-fsm"
MAX_INSTRUCTIONS = 8000


class RealtimeFrontEnd:
    def __init__(self, connection: ClientConnection, settings: Settings, model: str | None) -> None:
        self._connection = connection
        config = RealtimeConfig(
            model=model or DEFAULT_MODEL,
            instructions=settings.llm.instructions,
            voice=settings.tts.voice,
        )
        self._pace = EventPace(settings.limits.messages_per_s)
        self.renderer = Renderer(config, connection.send, self._pace.event)
        self._buffer = bytearray()
        self._max_buffer = bytes_for_ms(round(settings.limits.max_audio_seconds * 1000))
        self._min_commit_ms = settings.limits.min_audio_ms
        self._policy: ReplyPolicy | None = None
        self._items = Items(self.renderer, connection.send, self._turn)
        self._settling: set[asyncio.Task[None]] = set()

    async def attach(self, session: Session) -> None:
        self.renderer.session = session
        voice = session_config.own_voice(session.pipeline.tts)
        self.renderer.config = replace(self.renderer.config, own_voice=voice)
        await self._sync_policy(session)

    async def _sync_policy(self, session: Session) -> None:
        """Tell the session how to reply when the configuration says otherwise than last time
        (a session.update, or turn detection that could not open)."""
        policy = self.renderer.config.policy()
        if policy != self._policy:
            self._policy = policy
            await session.submit(policy)

    async def send(self, event: ServerEvent | bytes) -> None:
        await self.renderer.send(event)
        ended = isinstance(event, StateChanged) and event.state in (State.IDLE, State.RECORDING)
        session = self.renderer.session
        if ended and self._items.pending and session is not None:
            # Not from here, the session's driver: its inbox may be full.
            task = asyncio.create_task(self._items.settle(session))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def receive(self, session: Session, message: str | bytes) -> None:
        self._pace.took()
        try:
            if isinstance(message, bytes):
                raise EventError(
                    "Binary frames are not part of the Realtime API: send audio in "
                    "input_audio_buffer.append events.",
                    code="invalid_frame",
                )
            if len(message) > MAX_EVENT_BYTES:
                raise EventError(
                    f"An event may be at most {MAX_EVENT_BYTES} bytes.", code="event_too_large"
                )
            event = parse(message)
            await self._sync_policy(session)
            await self._handle(session, event)
        except EventError as err:
            await self._connection.send(dump(err.event()))

    async def _handle(self, session: Session, event: Any) -> None:
        event_id = event.event_id if isinstance(event.event_id, str) else None
        match event:
            case SessionUpdateEvent():
                applied, update = session_config.apply(
                    self.renderer.config, event.session, event_id
                )
                if applied.turn_detection is not None and not session.pipeline.hands_free:
                    # The rest of the update applies: the Agents SDK asks for semantic_vad
                    # in the same update as its instructions and tools.
                    error = EventError(
                        "Turn detection needs voice activity detection, which this server "
                        "does not have (VOICE_FSM_VAD__PROVIDER): it stays off, the rest of "
                        "the update is applied; commit the audio instead.",
                        code="turn_detection_unavailable",
                        param="session.audio.input.turn_detection",
                        event_id=event_id,
                    )
                    await self._connection.send(dump(error.event()))
                    applied, update = session_config.without_turn_detection(applied, update)
                self.renderer.config = applied
                await self._sync_policy(session)
                await session.submit(update)
            case InputAudioBufferAppendEvent():
                await self._append(session, event.audio, event_id)
            case InputAudioBufferCommitEvent():
                await self._commit(session, event_id)
            case InputAudioBufferClearEvent():
                self._buffer.clear()
                cleared = InputAudioBufferClearedEvent(
                    type="input_audio_buffer.cleared", event_id=new_id("event")
                )
                await self._connection.send(dump(cleared))
            case ResponseCreateEvent():
                reply = self._reply(event, event_id)
                if self.renderer.handed_over:  # the model goes on from the calls' outputs
                    for answer in self._items.answers():
                        await session.submit(answer)
                else:
                    await session.submit(reply)
            case ConversationItemCreateEvent():
                await self._items.create(session, event)
            case ConversationItemTruncateEvent():
                await self._items.truncate(session, event)
            case ConversationItemDeleteEvent():
                await self._items.delete(session, event)
            case ConversationItemRetrieveEvent():
                await self._items.retrieve(session, event)
            case ResponseCancelEvent():
                response = self.renderer.response
                if response is None:
                    raise EventError(
                        "Cancellation failed: no active response found.",
                        code="response_cancel_not_active",
                        event_id=event_id,
                    )
                if event.response_id is not None and event.response_id != response.id:
                    raise EventError(
                        f"Cancellation failed: response {event.response_id[:100]!r} is not "
                        f"the active response ({response.id}).",
                        code="response_cancel_not_active",
                        param="response_id",
                        event_id=event_id,
                    )
                await session.submit(ResponseCancel(type="response.cancel"))
            case _:
                raise EventError(
                    f"{event.type} is not supported by this server yet.",
                    code="unsupported_event",
                    param="type",
                    event_id=event_id,
                )

    async def _append(self, session: Session, audio: str, event_id: str | None) -> None:
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise EventError(
                "The audio is not valid base64.",
                code="invalid_value",
                param="audio",
                event_id=event_id,
            ) from None
        if len(pcm) % 2:
            raise EventError(
                "The audio is not whole PCM16 samples.",
                code="invalid_value",
                param="audio",
                event_id=event_id,
            )
        if self.renderer.config.turn_detection is not None:
            await session.submit(pcm)  # to the hands-free detector
            return
        if len(self._buffer) + len(pcm) > self._max_buffer:
            raise EventError(
                f"The input audio buffer would pass {duration_ms(self._max_buffer) // 1000} s; "
                "this audio was dropped (commit or clear the buffer).",
                code="input_audio_buffer_full",
                param="audio",
                event_id=event_id,
            )
        self._buffer += pcm

    async def _commit(self, session: Session, event_id: str | None) -> None:
        if self.renderer.config.turn_detection is not None:
            raise EventError(
                "With turn detection on, the server commits the audio itself.",
                code="unsupported_with_turn_detection",
                event_id=event_id,
            )
        held = duration_ms(len(self._buffer))
        if held < max(self._min_commit_ms, 1):
            raise EventError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{self._min_commit_ms}ms of audio, but buffer only has {held}ms of audio.",
                code="input_audio_buffer_commit_empty",
                event_id=event_id,
            )
        pcm, self._buffer = bytes(self._buffer), bytearray()
        await self._turn(session, pcm, new_id("item"))

    async def _turn(self, session: Session, pcm: bytes, item_id: str) -> None:
        """`pcm` as one push-to-talk turn, its user item `item_id` (a commit, or an
        `input_audio` item the client created)."""
        if self.renderer.config.turn_detection is not None:
            raise EventError(
                "With turn detection on, audio goes in input_audio_buffer.append.",
                code="unsupported_with_turn_detection",
            )
        self.renderer.commits.append(item_id)
        await session.submit(InputAudioStart(type="input_audio.start"))
        for offset in range(0, len(pcm), CHUNK):
            await session.submit(pcm[offset : offset + CHUNK])
        await session.submit(InputAudioStop(type="input_audio.stop"))

    def _reply(self, event: ResponseCreateEvent, event_id: str | None) -> ReplyCreate:
        """The reply `response.create` asks for: spoken or text, its own instructions, and
        out of band (`conversation: "none"`: not added to the history) or not."""
        params = event.response
        if params is None:
            return ReplyCreate(speak=self.renderer.config.speak)
        for name in ("conversation", "input", "tools", "tool_choice"):
            allowed = (None, "auto", "none") if name == "conversation" else (None, "auto")
            if name in params.model_fields_set and getattr(params, name) not in allowed:
                raise EventError(
                    f"response.{name} is not supported by this server yet.",
                    code="unsupported_value",
                    param=f"response.{name}",
                    event_id=event_id,
                )
        speak = self.renderer.config.speak
        if params.output_modalities:
            speak = "audio" in params.output_modalities
        instructions = params.instructions
        if instructions is not None and len(instructions) > MAX_INSTRUCTIONS:
            raise EventError(
                f"response.instructions may be at most {MAX_INSTRUCTIONS} characters.",
                code="invalid_value",
                param="response.instructions",
                event_id=event_id,
            )
        return ReplyCreate(
            speak=speak, instructions=instructions, out_of_band=params.conversation == "none"
        )
