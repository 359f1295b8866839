"""The agent's side of a turn: the stages that run once the user has stopped, and what the
driver does with their reports.

Entering `transcribing` names the transcription, entering `thinking` the reply (it goes on
through `speaking`, and through `acting` while tools it calls run, back to `thinking`: one
stage for the whole reply). Their reports come back through the session's inbox and `handle`
turns each into the machine's next trigger, called from the driver (`fire`).

A reply may start before the turn's end is confirmed (`speculate`, `speculation.py`): the
transcription's report then decides whether the thinking stage adopts it or starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from transitions.extensions.asyncio import AsyncMachine

from voice_fsm import stages
from voice_fsm.acting import TurnTools
from voice_fsm.adapters.base import PCM_SAMPLE_RATE, ChatMessage, ToolSpec
from voice_fsm.client_tools import ClientTools
from voice_fsm.conversation import Conversation
from voice_fsm.errors import VoiceError
from voice_fsm.events import (
    AudioStart,
    ReplyPolicy,
    ResponseDone,
    ServerEvent,
    SessionConfig,
    TranscriptDoneEvent,
)
from voice_fsm.machine import SPEECH_TO_SPEECH, State
from voice_fsm.providers import Pipeline
from voice_fsm.speculation import SETTLED_MS, same_in_substance, words
from voice_fsm.speech_to_speech import SpeechToSpeech
from voice_fsm.stage_runner import StageRunner
from voice_fsm.stages import (
    Acted,
    Acting,
    FirstAudio,
    Spoken,
    StageFailed,
    StageResult,
    Transcribed,
)
from voice_fsm.tool_settings import ToolSettings
from voice_fsm.turns import Turns

Send = Callable[[ServerEvent | bytes], Awaitable[None]]


class Replying:
    def __init__(
        self,
        stage: StageRunner,
        *,
        pipeline: Pipeline,
        turns: Turns,
        conversation: Conversation,
        config: Callable[[], SessionConfig],
        policy: Callable[[], ReplyPolicy],
        instructions: str,
        client_tools: ClientTools,
        tool_settings: ToolSettings,
        state: Callable[[], str],
        send: Send,
        fire: Callable[[str], Awaitable[None]],
        fail: Callable[[VoiceError], Awaitable[None]],
        finish: Callable[[str], None],
        preemptive: bool = True,
    ) -> None:
        self._stage = stage
        self._pipeline = pipeline
        self._turns = turns
        self._conversation = conversation
        self._config = config
        self._policy = policy
        self._instructions = instructions
        self._client_tools = client_tools
        self._tool_settings = tool_settings
        self._state = state
        self._send = send
        self._fire = fire
        self._fail = fail
        self._finish = finish
        self._preemptive = preemptive
        self.driver: asyncio.Task[Any] | None = None
        self.speech_to_speech = SpeechToSpeech(
            pipeline.speech,
            conversation=conversation,
            turns=turns,
            instructions=instructions,
            config=config,
            tools=self._turn_tools,
        )

    def name_stages(self, machine: AsyncMachine) -> None:
        state = machine.get_state
        state(State.TRANSCRIBING.value).add_callback(
            "enter", self._stage.entering(self._transcription, Transcribed)
        )
        start_reply = self._stage.entering(self._reply, lambda task, _: Spoken(task))

        async def enter_thinking(event: Any) -> None:
            if event.transition.source != State.ACTING.value:  # back from tools: same stage
                await start_reply(event)

        state(State.THINKING.value).add_callback("enter", enter_thinking)

    async def handle(self, report: StageResult) -> None:
        """A stage's report, from the driver: the machine's next step."""
        if not self._stage.is_current(report):
            return  # a stage cancelled since it reported
        turn = self._turns.current
        match report:
            case Transcribed():
                turn.transcript = report.text
                await self._send(TranscriptDoneEvent(turn=turn.number, text=report.text))
                policy = self._policy()
                if turn.reply_wanted or policy.auto:
                    if not turn.reply_wanted:
                        turn.speak = policy.speak
                    await self._confirm_held()
                    await self._fire("transcribed")
                else:  # the client asks for the reply when it wants it (ReplyCreate)
                    await self._turns.discard_held()
                    turn.awaiting_reply = True
                    await self._fire("heard")
            case FirstAudio():
                # Audio while tools run is a filler (or speech from before the calls): the
                # machine stays in acting.
                if self._state() == State.THINKING:
                    await self._fire("replied")
                if not turn.audio_announced:
                    turn.audio_announced = True
                    await self._send(AudioStart(turn=turn.number, sample_rate=PCM_SAMPLE_RATE))
                _let_go(report.go)
                self._turns.close_live_soon()
            case Acting():
                await self._fire("act")
                _let_go(report.go)
            case Acted():
                await self._fire("acted")
                _let_go(report.go)
            case Spoken():
                if turn.speak:
                    await self._send(turn.audio_done())
                await self._send(ResponseDone(turn=turn.number, text=turn.reply, interrupted=False))
                if not turn.out_of_band:
                    self._conversation.add_turn(turn, turn.reply)
                metrics = turn.metrics()
                self._finish("ok")
                await self._fire("spoken")
                await self._send(metrics)
            case StageFailed():
                await self._fail(report.error)

    async def speculate(self, *, settled: bool = False) -> None:
        """From the driver, when the user may have finished (a pause, the button released):
        start the reply on the live transcript (`speculation.py`), unless one runs on the same
        words already or the turn's reply cannot be known yet. A transcription that can tell
        (`KnowsCoverage`) must say its transcript covers the recording; one that cannot is
        trusted only with a remote language model (a wrong guess would hold the embedded one's
        only lane) and, when `settled`, only if its transcript has not changed over the
        recording's last `SETTLED_MS` (the user stopped a moment before the release)."""
        turn, config, policy = self._turns.current, self._config(), self._policy()
        if (
            not self._preemptive
            or turn.live is None
            or config.pipeline == SPEECH_TO_SPEECH
            or not (policy.auto and policy.speak)
            or turn.reply_wanted
            or self._state() not in (State.RECORDING, State.TRANSCRIBING)
        ):
            return
        text = turn.live.text.strip()
        held = self._turns.held
        covered = turn.live.covered()
        if covered is False or (
            covered is None
            and (
                self._pipeline.llm.provider == "local"
                or (settled and turn.live.settled_ms < SETTLED_MS)
            )
        ):
            return
        if not words(text) or (held is not None and words(held.text) == words(text)):
            return
        await self._turns.discard_held()
        self._turns.start_held(
            stages.held_reply(
                turn,
                self._pipeline.llm,
                self._pipeline.tts,
                self._prompt(text),
                text=text,
                voice=config.voice,
                tools=self._turn_tools(),
            )
        )

    async def _confirm_held(self) -> None:
        """The final transcript is in: the held reply stays, for the thinking stage to adopt,
        if it answers the same words with the same prompt and voice; else it is cancelled."""
        turn, held = self._turns.current, self._turns.held
        if held is None:
            return
        if not (
            turn.speak
            and same_in_substance(held.text, turn.transcript)
            and held.answers(self._prompt(held.text), self._config().voice, self._offered())
        ):
            await self._turns.discard_held()

    def _prompt(self, user: str) -> list[ChatMessage]:
        turn = self._turns.current
        instructions = turn.instructions or self._config().instructions or self._instructions
        return self._conversation.prompt(instructions, user)

    def _transcription(self) -> Awaitable[str]:
        return stages.transcribe(
            self._turns.current,
            self._pipeline.stt,
            language=self._config().language,
            send=self._stage_send,
            close_soon=self._turns.close_soon,
            log=self._turns.log,
        )

    def _reply(self) -> Awaitable[None]:
        turn, config = self._turns.current, self._config()
        if config.pipeline == "speech-to-speech":  # the Realtime model hears the recording
            return self.speech_to_speech.reply(
                turn,
                config,
                send=self._stage_send,
                first_audio=self._stage.first_audio,
                tools=self._turn_tools(),
            )
        held = self._turns.take_held()
        if held is not None:  # started on the live transcript, and confirmed
            return stages.adopt(
                held,
                turn,
                send=self._stage_send,
                first_audio=self._stage.first_audio,
                tools=self._turn_tools(),
            )
        return stages.reply(
            turn,
            self._pipeline.llm,
            self._pipeline.tts,
            self._prompt(turn.transcript),
            voice=config.voice,
            send=self._stage_send,
            first_audio=self._stage.first_audio,
            tools=self._turn_tools(),
        )

    def _offered(self) -> list[ToolSpec]:
        tools = self._turn_tools()
        return tools.specs() if tools is not None else []

    def _turn_tools(self) -> TurnTools | None:
        server = self._pipeline.tools
        if (server is None or not server.specs()) and not self._client_tools.specs():
            return None
        return TurnTools(
            server=server,
            client=self._client_tools,
            settings=self._tool_settings,
            checkpoint=self._stage.checkpoint,
        )

    async def _stage_send(self, event: ServerEvent | bytes) -> None:
        """A stage's events and audio: none once the session is ending. The driver hears of
        its cancellation only when it next runs, and a stage it let go on (a reply's audio)
        may be ready to send before that."""
        if self.driver is not None and self.driver.cancelling():
            raise asyncio.CancelledError
        await self._send(event)


def _let_go(go: asyncio.Future[None]) -> None:
    if not go.done():
        go.set_result(None)
