"""The session core's events rendered as Realtime server events.

The core speaks the same typed events to every front end (`events.py`); this turns them into
the Realtime API's: a change of state into the user's item committed or a response begun or
ended, the reply's text and audio into its deltas, a typed error into the API's `error` (and a
response that failed). Events a Realtime client has no use for (`turn.metrics`, `audio.start`)
are not sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from openai import BaseModel
from openai.types.realtime import (
    ConversationCreatedEvent,
    ConversationItemAdded,
    ConversationItemDone,
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeConversationItemUserMessage,
    RealtimeError,
    RealtimeErrorEvent,
)
from openai.types.realtime.conversation_created_event import Conversation
from openai.types.realtime.conversation_item_input_audio_transcription_completed_event import (
    UsageTranscriptTextUsageDuration,
)
from openai.types.realtime.conversation_item_input_audio_transcription_failed_event import (
    Error as TranscriptionError,
)
from openai.types.realtime.realtime_conversation_item_user_message import Content

from voice_fsm.errors import Stage
from voice_fsm.events import (
    ErrorEvent,
    ResponseDelta,
    ResponseDone,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
    StateChanged,
    ToolCallEvent,
    TranscriptDeltaEvent,
    TranscriptDoneEvent,
    VadSpeechStarted,
    VadSpeechStopped,
)
from voice_fsm.machine import State
from voice_fsm.realtime.config import RealtimeConfig
from voice_fsm.realtime.responses import ResponseEvents
from voice_fsm.realtime.wire import INVALID_REQUEST, SERVER_ERROR, dump, new_id

if TYPE_CHECKING:
    from voice_fsm.session import Session

REPLYING = (State.THINKING, State.SPEAKING, State.ACTING)


class Renderer:
    def __init__(
        self,
        config: RealtimeConfig,
        out: Callable[[str], Awaitable[None]],
        rate_limits: Callable[[], BaseModel],
    ) -> None:
        self.config = config
        self.session: Session | None = None
        self.conversation_id = new_id("conv")
        self.commits: deque[str] = deque()
        """The user items of commits on their way to the session, oldest first."""
        self.response: ResponseEvents | None = None
        self._out = out
        self._rate_limits = rate_limits
        """`rate_limits.updated` as it stands, sent after each `response.done`."""
        self._user_item: str | None = None
        self._speech_item: str | None = None
        self._last_item: str | None = None
        self._reply: str | None = None
        self._failure: tuple[str, str] | None = None
        self.handed_over: dict[str, str] = {}
        """The calls of the client's tools the model made, by call id (their items' ids), that
        the session waits for: their outputs come back as items, then a `response.create`."""

    async def send(self, event: ServerEvent | bytes) -> None:
        match event:
            case bytes():
                if self.response is not None and self.response.speak:
                    await self._emit(*self.response.audio_delta(event))
            case SessionCreated():
                await self._out(self.config.created())
                conversation = Conversation(id=self.conversation_id, object="realtime.conversation")
                await self._emit(
                    ConversationCreatedEvent(
                        type="conversation.created",
                        event_id=new_id("event"),
                        conversation=conversation,
                    )
                )
            case SessionUpdated():
                if event.session.mode == "push_to_talk" and self.config.turn_detection:
                    # The detector could not open: the client commits, as the session does.
                    self.config = replace(self.config, turn_detection=None)
                await self._out(self.config.updated())
            case StateChanged():
                await self._state_changed(event.previous, event.state)
            case TranscriptDeltaEvent() if self._user_item or self._speech_item:
                item = self._user_item or self._speech_item or ""
                await self._emit(
                    ConversationItemInputAudioTranscriptionDeltaEvent(
                        type="conversation.item.input_audio_transcription.delta",
                        event_id=new_id("event"),
                        item_id=item,
                        content_index=0,
                        delta=event.text,
                    )
                )
            case TranscriptDoneEvent() if self._user_item:
                await self._transcribed(self._user_item, event.text)
            case ResponseDelta() if self.response is not None:
                await self._emit(*self.response.text_delta(event.text))
            case ToolCallEvent(runs_on="client") if self.response is not None:
                await self._handed_over(event)
            case ResponseDone() if not event.interrupted:
                self._reply = event.text
            case ErrorEvent():
                await self._error(event)
            case VadSpeechStarted():
                self._speech_item = new_id("item")
                await self._emit(
                    InputAudioBufferSpeechStartedEvent(
                        type="input_audio_buffer.speech_started",
                        event_id=new_id("event"),
                        audio_start_ms=event.audio_ms,
                        item_id=self._speech_item,
                    )
                )
            case VadSpeechStopped():
                await self._emit(
                    InputAudioBufferSpeechStoppedEvent(
                        type="input_audio_buffer.speech_stopped",
                        event_id=new_id("event"),
                        audio_end_ms=event.audio_ms,
                        item_id=self._speech_item or new_id("item"),
                    )
                )

    async def _state_changed(self, previous: State, state: State) -> None:
        if previous == State.RECORDING and state == State.TRANSCRIBING:
            await self._committed()
        elif previous == State.RECORDING and self.commits:
            self.commits.popleft()  # the session refused the commit's audio (its error says why)
        if previous in REPLYING and state in (State.IDLE, State.RECORDING):
            await self._close_response(state)
        if state in (State.IDLE, State.RECORDING) or previous == State.ACTING:
            self.handed_over.clear()
        continued = previous == State.ACTING and self.response is None  # after the outputs
        if state == State.THINKING and (previous in (State.TRANSCRIBING, State.IDLE) or continued):
            turn = self.session.turn if self.session is not None else None
            speak = turn.speak if turn is not None else self.config.speak
            self.response = ResponseEvents(
                speak=speak,
                conversation_id=None if turn and turn.out_of_band else self.conversation_id,
                previous_item_id=self._last_item,
            )
            self._reply, self._failure = None, None
            if self.session is not None:  # the history keeps the reply under this id
                self.session.turn.reply_item = self.response.item_id
            await self._emit(*self.response.started())
        if state in (State.IDLE, State.THINKING):
            self._user_item = None

    def added(self, item_id: str, after: str | None) -> str | None:
        """A message the client added after `after` (None: last; "root": first): the id of
        the item before it."""
        if after is None:
            previous, self._last_item = self._last_item, item_id
            return previous
        return None if after == "root" else after

    async def _committed(self) -> None:
        item_id = self.commits.popleft() if self.commits else self._speech_item or new_id("item")
        self._speech_item = None
        self._user_item = item_id
        if self.session is not None:  # the history keeps the user's message under this id
            self.session.turn.user_item = item_id
        previous, self._last_item = self._last_item, item_id
        item = RealtimeConversationItemUserMessage(
            id=item_id,
            object="realtime.item",
            type="message",
            role="user",
            status="completed",
            content=[Content(type="input_audio")],
        )
        await self._emit(
            InputAudioBufferCommittedEvent(
                type="input_audio_buffer.committed",
                event_id=new_id("event"),
                item_id=item_id,
                previous_item_id=previous,
            )
        )
        await self._emit(
            ConversationItemAdded(
                type="conversation.item.added",
                event_id=new_id("event"),
                previous_item_id=previous,
                item=item,
            )
        )
        await self._emit(
            ConversationItemDone(
                type="conversation.item.done",
                event_id=new_id("event"),
                previous_item_id=previous,
                item=item,
            )
        )

    async def _transcribed(self, item_id: str, text: str) -> None:
        seconds = self.session.turn.audio_in_ms / 1000 if self.session is not None else 0.0
        await self._emit(
            ConversationItemInputAudioTranscriptionCompletedEvent(
                type="conversation.item.input_audio_transcription.completed",
                event_id=new_id("event"),
                item_id=item_id,
                content_index=0,
                transcript=text,
                usage=UsageTranscriptTextUsageDuration(type="duration", seconds=seconds),
            )
        )

    async def _close_response(self, state: State) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        self._last_item = response.last_item
        if self._failure is not None:
            events = response.finished("failed", error=self._failure)
        elif self._reply is not None:
            events = response.finished("completed", text=self._reply)
        else:
            cut_by_speech = state == State.RECORDING
            events = response.finished(
                "cancelled", reason="turn_detected" if cut_by_speech else "client_cancelled"
            )
        await self._emit(*events, self._rate_limits())

    async def _handed_over(self, event: ToolCallEvent) -> None:
        """A call of the client's tool ends the response once every call of its round is out
        (the session's driver waits for their outputs, and the next `response.create`)."""
        assert self.response is not None
        assert self.session is not None
        item_id = self.handed_over[event.call_id] = new_id("item")
        await self._emit(
            *self.response.function_call(item_id, event.call_id, event.name, event.arguments)
        )
        if self.session.client_tools.waiting() <= set(self.handed_over):
            response, self.response = self.response, None
            self._last_item = response.last_item
            await self._emit(*response.finished("completed"), self._rate_limits())

    async def _error(self, event: ErrorEvent) -> None:
        kind = INVALID_REQUEST if event.stage == Stage.INPUT else SERVER_ERROR
        if event.stage != Stage.INPUT and self.response is not None:
            self._failure = (kind, event.code.value)
        if event.stage == Stage.STT and self._user_item:
            await self._emit(
                ConversationItemInputAudioTranscriptionFailedEvent(
                    type="conversation.item.input_audio_transcription.failed",
                    event_id=new_id("event"),
                    item_id=self._user_item,
                    content_index=0,
                    error=TranscriptionError(
                        type=kind, code=event.code.value, message=event.message
                    ),
                )
            )
        error = RealtimeError(type=kind, code=event.code.value, message=event.message)
        await self._emit(RealtimeErrorEvent(type="error", event_id=new_id("event"), error=error))

    async def _emit(self, *models: BaseModel) -> None:
        for model in models:
            await self._out(dump(model))
