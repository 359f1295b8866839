"""One voice session: its state machine, its driver task and the work of each turn.

The WebSocket's receive loop only parses and calls `submit`. The driver task (`run`) takes the
inbox's items one at a time (commands, audio, the stages' reports) and is the only caller of
the machine's triggers. Entering transcribing or thinking names that stage's work
(`stages.py`), which the driver starts as a task once the client has heard of the new state.
A stage reports how it ended through the inbox and the driver fires the matching trigger; a
report of a stage the driver has cancelled since is stale and dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from voice_fsm.client_tools import ClientTools
from voice_fsm.conversation import Conversation, ConversationEdit
from voice_fsm.error_reports import ErrorReports
from voice_fsm.errors import ProviderError, VoiceError
from voice_fsm.events import (
    ConversationClear,
    InputAudioStart,
    InputAudioStop,
    ReplyCreate,
    ReplyPolicy,
    ResponseCancel,
    ServerEvent,
    SessionConfig,
    SessionUpdate,
    SessionUpdated,
    StateChanged,
    ToolResultCommand,
    session_created,
)
from voice_fsm.hands_free import Detected
from voice_fsm.hands_free_mode import HandsFreeMode, TurnControl, open_detector
from voice_fsm.inbox import ByteBoundedQueue
from voice_fsm.logging_setup import get_logger
from voice_fsm.machine import State
from voice_fsm.providers import Pipeline
from voice_fsm.replying import Replying
from voice_fsm.session_machine import SessionMachine
from voice_fsm.settings import Settings
from voice_fsm.stage_runner import StageRunner
from voice_fsm.stages import StageResult
from voice_fsm.turn import Turn
from voice_fsm.turn_record import TurnObserver
from voice_fsm.turn_taking import TurnTaking
from voice_fsm.turns import Turns

Sender = Callable[[ServerEvent | bytes], Awaitable[None]]
Command = (
    SessionUpdate
    | InputAudioStart
    | InputAudioStop
    | ResponseCancel
    | ConversationClear
    | ToolResultCommand
    | ReplyPolicy
    | ReplyCreate
    | ConversationEdit
)
Submission = Command | bytes | VoiceError | Detected
Inbox = Submission | StageResult


class Session:
    state: str  # kept by the machine

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        send: Sender,
        *,
        session_id: str | None = None,
        observers: Sequence[TurnObserver] = (),
    ) -> None:
        self.id = session_id or f"sess_{uuid.uuid4().hex[:16]}"
        self.pipeline = pipeline
        self.settings = settings
        self._send = send
        self.config = SessionConfig(
            instructions=settings.llm.instructions,
            voice=settings.tts.voice,
            language=settings.stt.language,
            mode="push_to_talk",
            pipeline=settings.pipeline,
        )
        self.reply_policy = ReplyPolicy()
        self.conversation = Conversation(max_turns=settings.llm.max_history_turns)
        self.client_tools = ClientTools()
        self._turns = Turns(
            self.id,
            get_logger(session_id=self.id, turn=0),
            providers={name: info["provider"] for name, info in pipeline.describe().items()},
            observers=observers,
        )
        limits = settings.limits
        self._inbox: ByteBoundedQueue[Inbox] = ByteBoundedQueue(limits.inbox_bytes)
        self._errors = ErrorReports(limits.errors_per_s, send)
        self.end_outcome = "disconnected"
        """The outcome of a turn still in flight when the session ends."""
        self._stage = StageRunner(
            self._inbox.put_now, log=lambda: self.log, on_done=lambda: self._machine.changed()
        )
        self.hands_free: HandsFreeMode | None = None
        self._machine = SessionMachine(self, self._stage, announce=self._announce_state)
        self.machine = self._machine.machine
        self._turn_taking = TurnTaking(
            state=lambda: self.state,
            fire=self._machine.fire,
            stage=self._stage,
            turns=self._turns,
            conversation=self.conversation,
            pipeline=pipeline,
            limits=limits,
            config=lambda: self.config,
            errors=self._errors,
            send=send,
            speculate=lambda: self._replying.speculate(settled=True),
        )
        self._replying = Replying(
            self._stage,
            pipeline=pipeline,
            turns=self._turns,
            conversation=self.conversation,
            config=lambda: self.config,
            policy=lambda: self.reply_policy,
            instructions=settings.llm.instructions,
            client_tools=self.client_tools,
            tool_settings=settings.tools,
            state=lambda: self.state,
            send=send,
            fire=self._machine.fire,
            fail=self._turn_taking.fail,
            finish=self._turn_taking.finish,
            preemptive=settings.vad.preemptive_reply,
        )
        self._replying.name_stages(self.machine)

    # ------------------------------------------------------------------ outside world

    async def submit(self, item: Submission) -> None:
        """Queue a parsed client message, an audio frame, or a parse error, in arrival order."""
        await self._inbox.put(item)

    async def run(self) -> None:
        """The driver: announce the session, then handle the inbox until cancelled."""
        self._replying.driver = asyncio.current_task()
        await self._send(
            session_created(
                self.id,
                self.pipeline.describe(),
                self.pipeline.hands_free,
                self.config,
                speech=self.pipeline.speech_info(),
            )
        )
        self.log.info("session.started", **self.pipeline.describe())
        try:
            while True:
                item = await self._inbox.get()
                try:
                    await self._handle(item)
                except VoiceError as err:
                    await self._errors.report_input(err, turn=self.turn.number, log=self.log)
        finally:
            self._inbox.clear()
            await self._stage.stop()
            await self._turns.close_open()
            self._close_hands_free()
            await self._replying.speech_to_speech.aclose()
            await self._turns.wait_closed()
            if self.state != State.IDLE:
                self._turn_taking.finish(self.end_outcome)
            self._turn_taking.settle_unanswered()
            self._errors.log_dropped(self.log, final=True)
            self.log.info("session.closed", turns=self.turn.number)

    @property
    def at_rest(self) -> bool:
        """Idle, with the last turn's events all sent."""
        return self.state == State.IDLE and not self._stage.running

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it at each change of state."""
        await self._machine.wait_until(condition)

    # ------------------------------------------------------------------ commands

    async def _handle(self, item: Inbox) -> None:
        match item:
            case StageResult():
                await self._replying.handle(item)
            case bytes() if self.hands_free is not None:
                await self.hands_free.frame(item)
            case bytes():
                await self._turn_taking.audio(item)
            case VoiceError():
                await self._errors.report_input(item, turn=self.turn.number, log=self.log)
            case InputAudioStart():
                self._replying.speech_to_speech.heard_until(item.played_ms)
                await self._turn_taking.start(item.played_ms)
            case InputAudioStop():
                await self._turn_taking.stop()
            case ResponseCancel():
                self._replying.speech_to_speech.heard_until(item.played_ms)
                await self._turn_taking.cancel(item.played_ms)
            case SessionUpdate():
                await self._on_session_update(item.session)
            case Detected():
                if self.hands_free is not None:
                    await self.hands_free.detected(item)
            case ConversationClear():
                self.conversation.clear()
                self.log.info("conversation.cleared")
            case ToolResultCommand():
                self.client_tools.answer(item)
            case ReplyPolicy():
                self.reply_policy = item
            case ReplyCreate():
                await self._turn_taking.respond(item)
            case ConversationEdit():
                if item.adds:
                    self._turn_taking.settle_unanswered()
                await item.run(self.conversation, self.turn)

    # ------------------------------------------------------------------ hands-free

    async def _hands_free_failed(self, err: VoiceError) -> None:
        """The provider's detector could not open, or failed (its connection lost): the error,
        then push-to-talk again (`session.updated`). A turn it was recording fails."""
        self._close_hands_free()
        self.config = self.config.model_copy(update={"mode": "push_to_talk"})
        if self.state == State.RECORDING:
            await self._turn_taking.fail(err)
        else:
            await self._errors.report(err, turn=self.turn.number, log=self.log)
        self.turn.stray_audio_reported = True  # the client streams on until it hears of it
        await self._send(SessionUpdated(session=self.config))

    def _close_hands_free(self) -> None:
        hands_free, self.hands_free = self.hands_free, None
        if hands_free is not None:
            self._turns.close_soon(hands_free)

    def _turn_control(self) -> TurnControl:  # for hands-free: what a push-to-talk client does
        return TurnControl(
            recording=lambda: self.state == State.RECORDING,
            turn_number=lambda: self.turn.number,
            start_turn=lambda transcriber: self._turn_taking.start(transcriber=transcriber),
            record=self._turn_taking.record,
            stop_turn=self._turn_taking.stop,
            send=self._send,
            paused=self._replying.speculate,
            resumed=self._turns.discard_held,
            speech_ended=lambda silence_ms: self.turn.speech_ended(silence_ms),
        )

    async def _on_session_update(self, update: SessionConfig) -> None:
        self._replying.speech_to_speech.check(update.pipeline)  # raises if it cannot run
        if update.tools is not None:  # checked first: a refused update changes nothing
            server = self.pipeline.tools
            self.client_tools.declare(update.tools, server.names() if server else ())
        if update.mode == "hands_free" and self.hands_free is None:
            try:
                detector = await open_detector(
                    self.pipeline, language=self.config.language, relay=self.submit
                )
            except ProviderError as err:
                await self._hands_free_failed(err)  # the update is not applied
                return
            control = self._turn_control()
            self.hands_free = HandsFreeMode(detector, control, failed=self._hands_free_failed)
        elif update.mode == "push_to_talk" and self.hands_free is not None:
            self._close_hands_free()
            if self.state == State.RECORDING:  # nothing would end that turn any more
                await self._turn_taking.cancel(None)
        changes = update.model_dump(exclude_none=True)
        self.config = self.config.model_copy(update=changes)
        self.log.info("session.updated", fields=sorted(changes))
        await self._send(SessionUpdated(session=self.config))

    # ------------------------------------------------------------------ machine plumbing

    async def _announce_state(self, state: str, previous: str) -> None:
        await self._send(
            StateChanged(state=State(state), previous=State(previous), turn=self.turn.number)
        )

    @property
    def turn(self) -> Turn:
        return self._turns.current

    @property
    def log(self) -> Any:
        return self._turns.log
