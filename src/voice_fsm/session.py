"""One voice session: its state machine, its driver task and the work of each turn.

The WebSocket's receive loop only parses and calls `submit`. The driver task (`run`) takes
commands one at a time and fires the machine's triggers. Entering transcribing, thinking or
speaking starts that stage's work as a task of its own, so the driver stays free for
`response.cancel` and barge-in; a finished stage fires the next trigger.

transitions' AsyncMachine swallows `CancelledError` inside a trigger (docs/style.md), so a
stage task checks `cancelling()` after each trigger it fires, and the driver cancels and awaits
the stage task itself before it moves the machine.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

from transitions.extensions.asyncio import AsyncMachine

from voice_fsm import PROTOCOL_VERSION, provider_requests
from voice_fsm.adapters.base import (
    PCM_SAMPLE_RATE,
    ChatMessage,
    LiveSpeechToText,
    TranscriptDelta,
    TranscriptDone,
)
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.audio import duration_ms
from voice_fsm.conversation import Conversation
from voice_fsm.errors import (
    ErrorCode,
    InputError,
    NoSpeechError,
    ProviderError,
    ServerError,
    VoiceError,
)
from voice_fsm.events import (
    AudioFormat,
    AudioStart,
    ConversationClear,
    ErrorEvent,
    InputAudioStart,
    InputAudioStop,
    ResponseCancel,
    ResponseDone,
    ServerEvent,
    SessionConfig,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    StageInfo,
    StateChanged,
    StateName,
    TranscriptDeltaEvent,
    TranscriptDoneEvent,
    VadSpeechStarted,
    VadSpeechStopped,
)
from voice_fsm.hands_free import Detected, HandsFree
from voice_fsm.inbox import ByteBoundedQueue
from voice_fsm.live import LiveTurn
from voice_fsm.logging_setup import get_logger
from voice_fsm.machine import REPLY_STATES, State, build_machine
from voice_fsm.providers import Pipeline
from voice_fsm.rate_limit import TokenBucket
from voice_fsm.reply import speak_while_writing
from voice_fsm.settings import Settings
from voice_fsm.turn import Turn
from voice_fsm.turn_record import TurnObserver, TurnRecord, notify
from voice_fsm.vad_events import SpeechStarted, VadEvent

Sender = Callable[[ServerEvent | bytes], Awaitable[None]]
Command = SessionUpdate | InputAudioStart | InputAudioStop | ResponseCancel | ConversationClear
Submission = Command | bytes | VoiceError | Detected

PROVIDER_VAD_KEEP_MS = 3000
"""Hands-free audio kept for a provider's detector, whose events come a network trip late."""
DROPPED_ERRORS_LOG_EVERY_S = 10.0
"""How often a session flooding bad messages may log how many error events it was spared;
the rest is counted and logged when the session ends."""


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
        self._observers = observers
        self._providers = {name: info["provider"] for name, info in pipeline.describe().items()}
        self.config = SessionConfig(
            instructions=settings.llm.instructions,
            voice=settings.tts.voice,
            language=settings.stt.language,
            mode="push_to_talk",
        )
        self.conversation = Conversation(max_turns=settings.llm.max_history_turns)
        self.turn = Turn(0)
        self.log = get_logger(session_id=self.id, turn=0)
        limits = settings.limits
        self._inbox: ByteBoundedQueue[Submission] = ByteBoundedQueue(limits.inbox_bytes)
        # A client sending bad messages in a loop hears of a few each second, not of each.
        self._error_budget = TokenBucket(limits.errors_per_s, burst=max(1.0, limits.errors_per_s))
        self._errors_dropped = 0
        self._errors_dropped_logged_at = float("-inf")
        self._state_changed = asyncio.Event()
        self.end_outcome = "disconnected"
        """The outcome of a turn still in flight when the session ends."""
        self._stage_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.hands_free: HandsFree | None = None
        self._machine_lock = asyncio.Lock()
        self._stray_audio_reported = False
        self._discard_audio = False
        self.machine: AsyncMachine = build_machine(self, after_state_change=self._announce_state)
        for state, work in (
            (State.TRANSCRIBING, self._transcribe),
            (State.THINKING, self._think),  # and speaking: the reply is spoken as it is written
        ):
            self.machine.get_state(state.value).add_callback("enter", self._starter(work))

    # ------------------------------------------------------------------ outside world

    async def submit(self, item: Submission) -> None:
        """Queue a parsed client message, an audio frame, or a parse error, in arrival order."""
        await self._inbox.put(item)

    async def run(self) -> None:
        """The driver: announce the session, then handle commands until cancelled."""
        await self._send(self._created_event())
        self.log.info("session.started", **self.pipeline.describe())
        try:
            while True:
                item = await self._inbox.get()
                try:
                    await self._handle(item)
                except VoiceError as err:
                    await self._report_input(err)
        finally:
            self._inbox.clear()
            await self._stop_stage()
            await self._close_live(self.turn)
            self._close_hands_free()
            if self._closing:
                await asyncio.wait(self._closing)
            if self.state != State.IDLE:
                self._finish_turn(self.end_outcome)
            self._log_dropped_errors(final=True)
            self.log.info("session.closed", turns=self.turn.number)

    @property
    def at_rest(self) -> bool:
        """Idle, with the last turn's events all sent."""
        task = self._stage_task
        return self.state == State.IDLE and (task is None or task.done())

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it at each change of state."""
        while not condition():
            changed = self._state_changed
            await changed.wait()

    # ------------------------------------------------------------------ commands

    async def _handle(self, item: Submission) -> None:
        await self._settle()
        match item:
            case bytes():
                await self._on_audio(item)
            case VoiceError():
                await self._report_input(item)
            case InputAudioStart():
                await self._on_start(item.played_ms)
            case InputAudioStop():
                await self._on_stop()
            case ResponseCancel():
                await self._on_cancel(item.played_ms)
            case SessionUpdate():
                await self._on_session_update(item.session)
            case Detected():
                if item.stream is self.hands_free:  # not from a stream closed since
                    await self._on_detected(item.event)
            case ConversationClear():
                self.conversation.clear()
                self.log.info("conversation.cleared")

    async def _on_start(
        self, played_ms: int | None = None, transcriber: LiveSpeechToText | None = None
    ) -> None:
        """Start a turn; `transcriber` transcribes it live instead of the pipeline's."""
        if self.state == State.RECORDING:
            raise InputError(
                ErrorCode.INVALID_STATE, "Already recording: send input_audio.stop first."
            )
        barge_in = self.state in REPLY_STATES
        if not barge_in:
            self._trim_unheard_reply(played_ms)
        if barge_in:
            await self._stop_stage()
            await self._close_live(self.turn)
            await self._close_interrupted_reply(played_ms)
            self._finish_turn("interrupted")
        self._begin_turn()
        self.pipeline.prepare()  # while the user talks
        await self._fire("barge_in" if barge_in else "start")
        stt = self.pipeline.stt
        live = transcriber or (stt if isinstance(stt, LiveSpeechToText) else None)
        if live is not None:
            number = self.turn.number

            async def forward(text: str) -> None:
                await self._send(TranscriptDeltaEvent(turn=number, text=text))

            self.turn.live = LiveTurn(
                live, self.turn.audio, language=self.config.language, on_delta=forward, log=self.log
            )

    async def _on_stop(self) -> None:
        if self.state != State.RECORDING:
            if self._discard_audio:  # the turn already ended with audio-too-long
                self._discard_audio = False
                return
            raise InputError(
                ErrorCode.INVALID_STATE,
                f"input_audio.stop needs a recording in progress; the session is {self.state}.",
            )
        turn = self.turn
        turn.clock.mark("stop")
        if turn.audio_in_ms < self.settings.limits.min_audio_ms:
            await self._fail(
                InputError(
                    ErrorCode.NO_AUDIO,
                    f"The recording held {turn.audio_in_ms} ms of audio; at least "
                    f"{self.settings.limits.min_audio_ms} ms is needed.",
                )
            )
            return
        await self._fire("stop")

    async def _on_cancel(self, played_ms: int | None) -> None:
        if self.state == State.IDLE:
            return  # a cancel racing the end of a reply is harmless
        await self._stop_stage()
        await self._close_live(self.turn)
        await self._close_interrupted_reply(played_ms)
        self._finish_turn("cancelled")
        await self._fire("cancel")

    async def _on_audio(self, frame: bytes) -> None:
        if self.hands_free is not None:
            await self._on_hands_free_audio(frame)
            return
        if self.state != State.RECORDING:
            if not (self._discard_audio or self._stray_audio_reported):
                self._stray_audio_reported = True
                raise InputError(
                    ErrorCode.INVALID_AUDIO,
                    f"Audio arrived while {self.state}; send input_audio.start first. "
                    "Further audio before the next turn is dropped without an error.",
                )
            return
        if len(frame) % 2:
            raise InputError(
                ErrorCode.INVALID_AUDIO,
                f"An audio frame of {len(frame)} bytes is not whole PCM16 samples; it was dropped.",
            )
        await self._record(frame)

    async def _record(self, audio: bytes) -> None:
        turn = self.turn
        limit = self.settings.limits.max_audio_seconds
        # Checked before the audio is kept: a turn never holds more than the limit.
        if duration_ms(len(turn.audio) + len(audio)) > limit * 1000:
            self._discard_audio = True
            await self._fail(
                InputError(
                    ErrorCode.AUDIO_TOO_LONG,
                    f"The recording passed the limit of {limit:g} s and was discarded.",
                )
            )
            return
        turn.audio += audio
        if turn.live is not None:
            turn.live.audio_arrived()

    async def _on_hands_free_audio(self, frame: bytes) -> None:
        """The microphone streams all the time; speech starts and ends the turns."""
        hands_free = self.hands_free
        assert hands_free is not None
        if len(frame) % 2:
            raise InputError(
                ErrorCode.INVALID_AUDIO,
                f"An audio frame of {len(frame)} bytes is not whole PCM16 samples; it was dropped.",
            )
        was_recording = self.state == State.RECORDING
        events = hands_free.feed(frame)
        if was_recording:
            await self._record(frame)
        for event in events:
            await self._on_vad(hands_free, event)

    async def _on_vad(self, hands_free: HandsFree, event: VadEvent) -> None:
        """Speech starts a turn (a barge-in if a reply is in flight) and its end ends it."""
        if isinstance(event, SpeechStarted):
            recording = self.state == State.RECORDING
            number = self.turn.number + (0 if recording else 1)
            await self._send(VadSpeechStarted(audio_ms=event.audio_ms, turn=number))
            if not recording:
                await self._on_start(transcriber=hands_free.transcriber(event))
                # The detector confirms speech a little after it began: start from there.
                await self._record(hands_free.audio_since(event.audio_ms))
        else:
            await self._send(VadSpeechStopped(audio_ms=event.audio_ms, turn=self.turn.number))
            if self.state == State.RECORDING:
                await self._on_stop()

    async def _on_detected(self, event: VadEvent | VoiceError) -> None:
        """An event of the provider's detector, relayed in order with the audio and commands."""
        hands_free = self.hands_free
        assert hands_free is not None
        if isinstance(event, VoiceError):
            await self._hands_free_failed(event)
        else:
            await self._on_vad(hands_free, event)

    async def _hands_free_failed(self, err: VoiceError) -> None:
        """The provider's detector could not open, or failed (its connection lost): the error,
        then push-to-talk again (`session.updated`); hands_free may be asked for again. A turn
        it was recording fails: nothing would end it."""
        self._close_hands_free()
        self.config = self.config.model_copy(update={"mode": "push_to_talk"})
        if self.state == State.RECORDING:
            await self._fail(err)
        else:
            await self._report(err)
        self._stray_audio_reported = True  # the client streams on until it hears of it
        await self._send(SessionUpdated(session=self.config))

    async def _open_hands_free(self) -> HandsFree:
        pipeline = self.pipeline
        if pipeline.vad is not None:
            return HandsFree(pipeline.vad())
        if pipeline.turns is None:
            raise InputError(
                ErrorCode.INVALID_MESSAGE,
                "hands_free mode needs voice activity detection, which this server does not "
                "have (the embedded engines' or OpenAI Realtime speech-to-text's, "
                "VOICE_FSM_VAD__PROVIDER); use push_to_talk.",
            )
        detector = await pipeline.turns(language=self.config.language)
        return HandsFree(detector, relay=self.submit, keep_ms=PROVIDER_VAD_KEEP_MS)

    def _close_hands_free(self) -> None:
        hands_free, self.hands_free = self.hands_free, None
        if hands_free is not None:
            self._close_in_background(hands_free)

    async def _on_session_update(self, update: SessionConfig) -> None:
        if update.mode == "hands_free" and self.hands_free is None:
            try:
                self.hands_free = await self._open_hands_free()
            except ProviderError as err:
                await self._hands_free_failed(err)  # the update is not applied
                return
        elif update.mode == "push_to_talk" and self.hands_free is not None:
            self._close_hands_free()
            if self.state == State.RECORDING:  # nothing would end that turn any more
                await self._on_cancel(None)
        changes = update.model_dump(exclude_none=True)
        self.config = self.config.model_copy(update=changes)
        self.log.info("session.updated", fields=sorted(changes))
        await self._send(SessionUpdated(session=self.config))

    # ------------------------------------------------------------------ machine plumbing

    async def _fire(self, trigger: str) -> None:
        """Fire a trigger; stop here if this task was cancelled inside it.

        One trigger at a time: AsyncMachine cancels whatever other task is inside a trigger of
        the same model, which would let a fast-failing stage cancel the driver. We cancel
        stages ourselves, explicitly.
        """
        async with self._machine_lock:
            await self.machine.events[trigger].trigger(self)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    def _starter(
        self, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        async def start(_event: Any) -> None:
            # A fresh transitions context: the stage task is not part of the trigger that
            # started it, so the machine neither waits for it nor mistakes it for that trigger.
            context = contextvars.copy_context()
            context.run(AsyncMachine.current_context.set, None)
            self._stage_task = asyncio.get_running_loop().create_task(
                self._guarded(work), context=context
            )

        return start

    async def _guarded(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # The trigger that started this stage holds the lock until the client has heard of
        # the new state; wait for it, so no event of this stage can overtake that one.
        async with self._machine_lock:
            pass
        try:
            await self._run_stage(work)
        finally:
            # Let whoever waits for the session to be at rest look again: this task is done.
            asyncio.get_running_loop().call_soon(self._notify_change)

    async def _run_stage(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await work()
        except VoiceError as err:
            await self._fail(err)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.log.exception("stage.crashed", state=self.state)
            await self._fail(
                ServerError(ErrorCode.INTERNAL, f"Internal error: {type(err).__name__}")
            )

    async def _stop_stage(self) -> None:
        """Cancel the running stage, and any stage it started while being cancelled."""
        while (task := self._stage_task) is not None:
            task.cancel()
            # wait() rather than await: the stage's CancelledError is not the driver's own.
            await asyncio.wait({task})
            if self._stage_task is task:
                self._stage_task = None

    async def _settle(self) -> None:
        """Let a stage that already moved the machine to idle finish telling the client."""
        task = self._stage_task
        if self.state == State.IDLE and task is not None and not task.done():
            await asyncio.wait({task})

    def _notify_change(self) -> None:
        changed, self._state_changed = self._state_changed, asyncio.Event()
        changed.set()

    async def _announce_state(self, event: Any) -> None:
        self._notify_change()
        await self._send(
            StateChanged(
                state=cast(StateName, self.state),
                previous=event.transition.source,
                turn=self.turn.number,
            )
        )

    def _close_live_soon(self, turn: Turn) -> None:
        """Close the turn's live transcription without waiting for it (off the critical path)."""
        live, turn.live = turn.live, None
        if live is not None:
            self._close_in_background(live)

    def _close_in_background(self, closable: LiveTurn | HandsFree) -> None:
        task = asyncio.create_task(closable.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_live(self, turn: Turn) -> None:
        live, turn.live = turn.live, None
        if live is not None:
            await live.aclose()

    async def _fail(self, err: VoiceError) -> None:
        await self._close_live(self.turn)
        await self._report(err)
        self._finish_turn("error", code=err.code.value, stage=err.stage.value)
        await self._fire("fail")

    async def _report_input(self, err: VoiceError) -> None:
        """Report an error in a message (not a turn's failure), within the error budget."""
        if not self._error_budget.take():
            self._errors_dropped += 1
            return
        self._log_dropped_errors()
        await self._report(err)

    def _log_dropped_errors(self, *, final: bool = False) -> None:
        """One summary line for the error events dropped so far: at most one line each
        `DROPPED_ERRORS_LOG_EVERY_S` while a flood goes on, and the rest at the end."""
        now = time.monotonic()
        if not self._errors_dropped or (
            not final and now - self._errors_dropped_logged_at < DROPPED_ERRORS_LOG_EVERY_S
        ):
            return
        self.log.warning("input.errors_dropped", count=self._errors_dropped)
        self._errors_dropped = 0
        self._errors_dropped_logged_at = now

    async def _report(self, err: VoiceError) -> None:
        self.log.warning(
            "turn.error", code=err.code.value, stage=err.stage.value, message=err.message
        )
        await self._send(
            ErrorEvent(
                code=err.code,
                stage=err.stage,
                message=err.message,
                retryable=err.retryable,
                turn=self.turn.number,
            )
        )

    # ------------------------------------------------------------------ turn lifecycle

    def _begin_turn(self) -> None:
        self.turn = Turn(self.turn.number + 1)
        self.turn.clock.mark("start")
        self.turn.provider_requests = provider_requests.collect()
        self._stray_audio_reported = False
        self._discard_audio = False
        self.log = self.log.bind(turn=self.turn.number)

    async def _close_interrupted_reply(self, played_ms: int | None = None) -> None:
        """Tell the client how far an interrupted reply got, and keep what was said of it."""
        turn = self.turn
        if self.state not in (State.THINKING, State.SPEAKING):
            return
        if turn.audio_sent:
            await self._send(turn.audio_done())
        if turn.reply:
            await self._send(ResponseDone(turn=turn.number, text=turn.reply, interrupted=True))
        heard = ""
        if self.state == State.SPEAKING:
            # The model should remember what the user heard, not what it wrote: the client's
            # played_ms when it says, else all the audio sent (which it may not have played).
            heard = turn.spoken.heard(turn.played_bytes(played_ms))
            self.conversation.add_turn(turn.transcript, heard)
        self.log.info(
            "reply.interrupted",
            played_ms=played_ms,
            sent_ms=duration_ms(turn.audio_sent),
            heard_chars=len(heard),
        )

    def _trim_unheard_reply(self, played_ms: int | None) -> None:
        """The last reply was all sent, but the client may still have been playing it when
        the user started talking: the history keeps what was heard of it."""
        turn = self.turn
        # Only on the client's word: a client that does not play audio (a script) may start
        # its next turn at once, and its history must not lose the reply.
        if played_ms is None or turn.outcome != "ok" or not turn.audio_sent:
            return
        played = turn.played_bytes(played_ms)
        if played < turn.audio_sent:
            heard = turn.spoken.heard(played)
            self.conversation.replace_last_reply(heard)
            self.log.info("reply.cut_short", played_ms=duration_ms(played), heard_chars=len(heard))

    def _finish_turn(
        self, outcome: str, *, code: str | None = None, stage: str | None = None
    ) -> None:
        """The one canonical record of a turn: its log line, and its observers."""
        turn = self.turn
        if turn.outcome is not None:
            return
        turn.outcome = outcome
        turn.clock.mark("end")  # so the record's marks span the whole turn (traces use them)
        record = TurnRecord(
            session_id=self.id,
            turn=turn.number,
            outcome=outcome,
            mode=self.config.mode or "push_to_talk",
            providers=self._providers,
            timings=turn.metrics().model_dump(exclude={"type", "turn"}),
            provider_requests=turn.provider_requests,
            code=code,
            stage=stage,
            marks=turn.clock.offsets("start"),
        )
        turn.release_audio()
        self.log.info("turn.completed", **record.log_fields())
        notify(self._observers, record, self.log)

    # ------------------------------------------------------------------ stages

    async def _transcribe(self) -> None:
        turn = self.turn
        if turn.live is not None:
            with turn.clock.span("stt"):
                text = await turn.live.finish()
            if text is not None:
                # Its connection is closed after the first reply audio: closing it now would
                # compete with the reply's first requests, here and at the provider.
                await self._transcribed(turn, text)
                return
            self._close_live_soon(turn)
            self.log.info("live_transcription.fallback")
        parts: list[str] = []
        with turn.clock.span("stt"):
            stream = self.pipeline.stt.transcribe(bytes(turn.audio), language=self.config.language)
            async with closing_stream(stream):
                async for event in stream:
                    if isinstance(event, TranscriptDelta):
                        parts.append(event.text)
                        await self._send(TranscriptDeltaEvent(turn=turn.number, text=event.text))
                    elif isinstance(event, TranscriptDone):
                        parts = [event.text]
        await self._transcribed(turn, "".join(parts))

    async def _transcribed(self, turn: Turn, text: str) -> None:
        turn.transcript = text.strip()
        if not turn.transcript:
            raise NoSpeechError()
        await self._send(TranscriptDoneEvent(turn=turn.number, text=turn.transcript))
        await self._fire("transcribed")

    async def _think(self) -> None:
        """Write the reply and speak it as it is written; the machine turns `speaking` at the
        first audio (`_send_audio`)."""
        turn = self.turn
        instructions = self.config.instructions or self.settings.llm.instructions
        messages = [
            ChatMessage("system", instructions),
            *self.conversation.messages(),
            ChatMessage("user", turn.transcript),
        ]

        async def send_audio(frame: bytes) -> None:
            await self._send_audio(turn, frame)

        await speak_while_writing(
            turn,
            self.pipeline.llm,
            self.pipeline.tts,
            messages,
            voice=self.config.voice,
            send=self._send,
            send_audio=send_audio,
        )
        await self._send(turn.audio_done())
        await self._send(ResponseDone(turn=turn.number, text=turn.reply, interrupted=False))
        self.conversation.add_turn(turn.transcript, turn.reply)
        metrics = turn.metrics()
        self._finish_turn("ok")
        await self._fire("spoken")
        await self._send(metrics)

    async def _send_audio(self, turn: Turn, frame: bytes) -> None:
        if not turn.audio_sent:
            await self._fire("replied")
            await self._send(AudioStart(turn=turn.number, sample_rate=PCM_SAMPLE_RATE))
        await self._send(frame)
        if not turn.audio_sent:
            turn.clock.mark("first_audio_sent")
            self._close_live_soon(turn)
        turn.audio_sent += len(frame)
        turn.spoken.add_audio(len(frame))

    def _created_event(self) -> SessionCreated:
        stages = self.pipeline.describe()
        return SessionCreated(
            session_id=self.id,
            protocol=PROTOCOL_VERSION,
            input_audio=AudioFormat(),
            output_audio=AudioFormat(),
            stt=StageInfo(**stages["stt"]),
            llm=StageInfo(**stages["llm"]),
            tts=StageInfo(**stages["tts"]),
            modes=["push_to_talk", "hands_free"] if self.pipeline.hands_free else ["push_to_talk"],
            session=self.config,
        )
