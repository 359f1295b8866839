"""The user's side of a session: turns started, stopped, cancelled or barged in on, their
audio recorded, and a turn ended by a typed error. Push-to-talk clients give these commands
through the driver, and hands-free mode gives the same ones (`TurnControl`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from voice_fsm import recording
from voice_fsm.adapters.base import LiveSpeechToText
from voice_fsm.conversation import Conversation
from voice_fsm.error_reports import ErrorReports
from voice_fsm.errors import ErrorCode, InputError, VoiceError
from voice_fsm.events import ReplyCreate, ServerEvent, SessionConfig
from voice_fsm.machine import REPLY_STATES, State
from voice_fsm.providers import Pipeline
from voice_fsm.settings import LimitSettings
from voice_fsm.stage_runner import StageRunner
from voice_fsm.turns import Turns


class TurnTaking:
    def __init__(
        self,
        *,
        state: Callable[[], str],
        fire: Callable[[str], Awaitable[None]],
        stage: StageRunner,
        turns: Turns,
        conversation: Conversation,
        pipeline: Pipeline,
        limits: LimitSettings,
        config: Callable[[], SessionConfig],
        errors: ErrorReports,
        send: Callable[[ServerEvent], Awaitable[None]],
        speculate: Callable[[], Awaitable[None]],
    ) -> None:
        """`speculate`: the user may have finished (`Replying.speculate`)."""
        self._state = state
        self._fire = fire
        self._stage = stage
        self._turns = turns
        self._conversation = conversation
        self._pipeline = pipeline
        self._limits = limits
        self._config = config
        self._errors = errors
        self._send = send
        self._speculate = speculate

    async def start(
        self, played_ms: int | None = None, transcriber: LiveSpeechToText | None = None
    ) -> None:
        """Start a turn; `transcriber` transcribes it live instead of the pipeline's."""
        if self._state() == State.RECORDING:
            raise InputError(
                ErrorCode.INVALID_STATE, "Already recording: send input_audio.stop first."
            )
        barge_in = self._state() in REPLY_STATES
        self.settle_unanswered()
        if not barge_in and (
            heard := self._conversation.trim_to_heard(self._turns.current, played_ms)
        ):
            self._turns.log.info("reply.cut_short", played_ms=played_ms, heard_chars=len(heard))
        if barge_in:
            await self.interrupt(played_ms, "interrupted")
        self._turns.begin()
        self._pipeline.prepare()  # while the user talks
        await self._fire("barge_in" if barge_in else "start")
        if self._config().pipeline == "speech-to-speech":
            return  # the Realtime model transcribes what it hears: no transcription to pay for
        recording.transcribe_live(
            self._turns.current,
            self._pipeline.stt,
            transcriber,
            language=self._config().language,
            send=self._send,
            log=self._turns.log,
        )

    async def stop(self) -> None:
        if self._state() != State.RECORDING:
            if self._turns.current.audio_refused:  # that turn already ended with audio-too-long
                self._turns.current.audio_refused = False
                return
            raise InputError(
                ErrorCode.INVALID_STATE,
                f"input_audio.stop needs a recording in progress; the session is {self._state()}.",
            )
        self._turns.current.clock.mark("stop")
        self._turns.current.audio.close()
        if err := recording.too_short(self._turns.current, self._limits):
            await self.fail(err)
        else:
            await self._fire("stop")
            await self._speculate()  # the reply may start on the live transcript at once

    async def cancel(self, played_ms: int | None) -> None:
        if self._state() != State.IDLE:  # else a cancel racing the end of a reply: harmless
            await self.interrupt(played_ms, "cancelled")
            await self._fire("cancel")

    async def respond(self, ask: ReplyCreate) -> None:
        """Reply to the conversation as it stands: to the turn waiting for it, or (when the
        session is transcribing one) once its transcript is in, or with no new user message.
        A reply out of band answers the history as it stands, and leaves it as it was."""
        state, turn = self._state(), self._turns.current
        if state == State.TRANSCRIBING and not turn.reply_wanted and not ask.out_of_band:
            turn.reply_wanted, turn.speak, turn.instructions = True, ask.speak, ask.instructions
            return
        if state != State.IDLE:
            raise InputError(
                ErrorCode.INVALID_STATE,
                f"A reply needs the session at rest; it is {state} (cancel the reply first).",
            )
        if ask.out_of_band:
            self.settle_unanswered()  # the user's message stays in the history
        if not turn.awaiting_reply:
            turn = self._turns.begin()
        turn.awaiting_reply, turn.speak = False, ask.speak
        turn.instructions, turn.out_of_band = ask.instructions, ask.out_of_band
        await self._fire("respond")

    def settle_unanswered(self) -> None:
        """A transcribed turn the client never asked a reply for ends (outcome `transcribed`):
        its user message stays in the history."""
        turn = self._turns.current
        if turn.awaiting_reply:
            turn.awaiting_reply = False
            self._conversation.add_turn(turn, "")
            self.finish("transcribed")

    async def audio(self, frame: bytes) -> None:
        """A push-to-talk audio frame: kept if a turn is recording."""
        if self._state() != State.RECORDING:
            if err := recording.stray_audio(self._turns.current, self._state()):
                raise err
        else:
            recording.check_frame(frame)
            await self.record(frame)

    async def record(self, audio: bytes) -> None:
        if err := recording.too_long(self._turns.current, audio, self._limits):
            await self.fail(err)
        else:
            recording.keep(self._turns.current, audio)

    async def fail(self, err: VoiceError) -> None:
        await self._stage.stop()
        await self._turns.close_open()
        await self._errors.report(err, turn=self._turns.current.number, log=self._turns.log)
        self.finish("error", code=err.code.value, stage=err.stage.value)
        await self._fire("fail")

    def finish(self, outcome: str, **why: str) -> None:
        self._turns.finish(outcome, mode=self._config().mode or "push_to_talk", **why)

    async def interrupt(self, played_ms: int | None, outcome: str) -> None:
        """End the turn in flight: its stage stopped, its live transcription closed, the client
        told how far its reply got and the history given what was heard of it."""
        await self._stage.stop()
        await self._turns.close_open()
        if self._state() in (State.THINKING, State.SPEAKING, State.ACTING):
            turn = self._turns.current
            await self._turns.close_interrupted_reply(
                self._conversation,
                # With tools, speech may have begun before the state it is in now.
                speaking=self._state() == State.SPEAKING
                or bool(turn.audio_sent or turn.tool_steps),
                played_ms=played_ms,
                send=self._send,
            )
        self.finish(outcome)
