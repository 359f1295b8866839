"""Speech-to-speech mode's stage: a Realtime model hears the turn's audio and answers aloud.

In this mode the machine goes recording → thinking → speaking as in the cascade, but entering
thinking starts this stage instead of the transcription and the reply: it sends the turn's
recording to the session's `RealtimeConversation` (one upstream Realtime session per voice
session, opened at its first turn in this mode with the history so far), asks for a response
and relays it as the cascade's events: the model's input transcription as ``transcript.done``,
its output transcript as ``response.delta``, its audio as the reply's frames (the first one
through `first_audio`, which turns the machine to speaking). The model's function calls run
through the turn's tools (`acting.act`: acting and back), their results go upstream and the
model goes on.

Barge-in and ``response.cancel`` cancel the stage: the response is cancelled upstream and its
item truncated to what the user heard (the client's ``played_ms``, given to `heard_until` by
the driver, or real-time playback since the first frame, `Turn.played_bytes`); a reply sent
whole but still playing when the user spoke is truncated before the next turn. A provider
failure is a `ProviderError` (the driver's typed error, back to idle); the upstream session is
dropped and the next turn opens another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from voice_fsm.acting import TurnTools, act
from voice_fsm.adapters.base import ToolCall
from voice_fsm.adapters.openai.realtime_conversation_events import (
    ReplyAudio,
    ReplyTranscriptDelta,
    UserTranscript,
)
from voice_fsm.audio import duration_ms
from voice_fsm.conversation import Conversation
from voice_fsm.errors import ErrorCode, InputError, ProviderError
from voice_fsm.events import ResponseDelta, ServerEvent, SessionConfig, TranscriptDoneEvent
from voice_fsm.machine import SPEECH_TO_SPEECH
from voice_fsm.turn import Turn
from voice_fsm.turns import Turns

if TYPE_CHECKING:
    from voice_fsm.adapters.openai.realtime_conversation import RealtimeConversation
    from voice_fsm.adapters.openai.realtime_speech_to_speech import OpenAISpeechToSpeech

Send = Callable[[ServerEvent | bytes], Awaitable[None]]


class SpeechToSpeech:
    """One session's speech-to-speech stage and its upstream conversation."""

    def __init__(
        self,
        adapter: OpenAISpeechToSpeech | None,
        *,
        conversation: Conversation,
        turns: Turns,
        instructions: str,
        config: Callable[[], SessionConfig],
        tools: Callable[[], TurnTools | None],
    ) -> None:
        self._adapter = adapter
        self._config = config
        self._tools = tools
        self._opening: asyncio.Task[tuple[tuple[Any, ...], RealtimeConversation]] | None = None
        self._history = conversation
        self._turns = turns
        self._instructions = instructions
        self._upstream: RealtimeConversation | None = None
        self._key: tuple[Any, ...] | None = None  # what the upstream session was opened with
        self._last_turn = -1  # the number of the last turn it ran
        self._history_len = 0  # the history's length when it ran
        self._played_ms: int | None = None  # the client's word, at a barge-in or cancel
        self._item: tuple[str, int] | None = None  # the reply's audio item, bytes sent before it
        self._item_turn: Turn | None = None
        self._pending: tuple[str, int] | None = None  # a truncate for the next turn to send
        self._announced = False
        self._piece = ""  # the spoken piece's text so far (transcript since the last audio)

    def check(self, pipeline: str | None) -> None:
        """A ``session.update`` asking for `pipeline`: `InputError` for speech-to-speech mode
        on a server that cannot run it (the update is refused whole)."""
        if pipeline == SPEECH_TO_SPEECH and self._adapter is None:
            raise InputError(
                ErrorCode.INVALID_MESSAGE,
                "This server cannot run speech-to-speech mode: it needs a Realtime model "
                "(OpenAI's API, or VOICE_FSM_S2S__BASE_URL); session.created's pipelines lists "
                "the pipelines it runs.",
            )

    def heard_until(self, played_ms: int | None) -> None:
        """From the driver, before a turn starts or a reply is cancelled: how much of the reply
        in flight (or just ended) the client had played. In this mode, with no upstream session
        open yet, one is opened now, while the user talks."""
        self._played_ms = played_ms
        turn = self._turns.current
        if turn is self._item_turn and turn.outcome == "ok" and played_ms is not None:
            self._pending = self._cut(turn, played_ms, whole=False)
        config = self._config()
        if (
            config.pipeline == SPEECH_TO_SPEECH
            and self._adapter is not None
            and self._upstream is None
            and self._opening is None
        ):  # the first turn in this mode: open the upstream session while the user talks
            self._opening = asyncio.create_task(self._connect(config, self._tools()))

    async def reply(
        self,
        turn: Turn,
        config: SessionConfig,
        *,
        send: Send,
        first_audio: Callable[[], Awaitable[None]],
        tools: TurnTools | None,
    ) -> None:
        """The turn's reply, from its recording."""
        self._played_ms, self._item, self._item_turn = None, None, turn
        self._announced, self._piece = False, ""
        upstream = await self._open(turn, config, tools)
        try:
            if self._pending is not None:
                await self._truncate(upstream, *self._pending)
            async for chunk in turn.audio.chunks():
                await upstream.append(chunk)
            await self._respond(turn, upstream, send, first_audio, tools)
        except asyncio.CancelledError:
            cut = self._cut(turn, self._played_ms, whole=True)
            if cut is not None:
                await self._truncate(upstream, *cut)
            raise
        except ProviderError:
            self._drop()
            raise

    async def aclose(self) -> None:
        """The session ends: close its upstream session, and one being opened."""
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, ProviderError):
                _, self._upstream = await opening
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            await upstream.aclose()

    # ------------------------------------------------------------------ the turn

    async def _respond(
        self,
        turn: Turn,
        upstream: RealtimeConversation,
        send: Send,
        first_audio: Callable[[], Awaitable[None]],
        tools: TurnTools | None,
    ) -> None:
        turn.clock.mark("llm.start")
        rounds = tools.settings.max_rounds if tools is not None else 0
        while True:
            calls: list[ToolCall] = []
            async with aclosing(upstream.respond()) as events:
                async for event in events:
                    if isinstance(event, UserTranscript):
                        turn.transcript = (event.text or "").strip()
                        if turn.transcript:
                            await send(TranscriptDoneEvent(turn=turn.number, text=turn.transcript))
                        continue
                    turn.clock.mark_once("llm.first_token")
                    if isinstance(event, ReplyAudio):
                        await self._audio(turn, event, send, first_audio)
                    elif isinstance(event, ReplyTranscriptDelta):
                        await self._text(turn, event.text, send)
                    elif isinstance(event, ToolCall):
                        calls.append(event)
            if not calls or tools is None or rounds <= 0:
                break
            rounds -= 1
            steps = await act(turn, tools, calls, "", send=send, filler=None)
            for step in steps:
                if step.role == "tool" and step.tool_call_id is not None:
                    await upstream.submit_tool_result(step.tool_call_id, step.content)
            self._announced = False  # the machine is thinking again
        turn.clock.mark("llm.end")

    async def _audio(
        self, turn: Turn, event: ReplyAudio, send: Send, first_audio: Callable[[], Awaitable[None]]
    ) -> None:
        if not self._announced:
            await first_audio()
            self._announced = True
        if self._item is None or self._item[0] != event.item_id:
            self._item = (event.item_id, turn.audio_sent)
        await send(event.pcm)
        if not turn.audio_sent:
            turn.clock.mark("first_audio_sent")
        turn.audio_sent += len(event.pcm)
        if not turn.spoken.pieces:
            turn.spoken.start_piece("")
        turn.spoken.add_audio(len(event.pcm))
        self._piece = ""

    async def _text(self, turn: Turn, text: str, send: Send) -> None:
        """A piece of the output transcript: the reply's text, and the text of the audio that
        follows it (what `SpokenReply.heard` gives back after a barge-in)."""
        turn.reply += text
        await send(ResponseDelta(turn=turn.number, text=text))
        pieces = turn.spoken.pieces
        if not self._piece and (not pieces or pieces[-1][1]):
            turn.spoken.start_piece("")
        self._piece += text
        pieces[-1] = (self._piece.strip(), pieces[-1][1])

    # ------------------------------------------------------------------ upstream

    async def _open(
        self, turn: Turn, config: SessionConfig, tools: TurnTools | None
    ) -> RealtimeConversation:
        """The upstream session: the open one if it has the whole conversation and the
        session's settings, else a new one given the history."""
        key = self._key_of(config, tools)
        opening, self._opening = self._opening, None
        if opening is not None:  # opened as the turn started
            opened, upstream = await opening
            self._drop()
            self._upstream, self._key = upstream, opened
            self._last_turn, self._history_len = turn.number - 1, len(self._history)
        current = (
            self._upstream is not None
            and self._key == key
            and self._last_turn == turn.number - 1
            and len(self._history) >= self._history_len  # not cleared since
        )
        if not current:
            self._drop()
            self._pending = None  # that reply's item is in no session any more
            key, self._upstream = await self._connect(config, tools)
        self._key, self._last_turn, self._history_len = key, turn.number, len(self._history)
        assert self._upstream is not None
        return self._upstream

    def _key_of(self, config: SessionConfig, tools: TurnTools | None) -> tuple[Any, ...]:
        """What an upstream session is configured with: a change needs another."""
        specs = tools.specs() if tools is not None else []
        instructions = config.instructions or self._instructions
        return (instructions, config.voice, tuple((s.name, repr(s.parameters)) for s in specs))

    async def _connect(
        self, config: SessionConfig, tools: TurnTools | None
    ) -> tuple[tuple[Any, ...], RealtimeConversation]:
        assert self._adapter is not None  # session.update refuses the mode without it
        key = self._key_of(config, tools)
        upstream = await self._adapter.connect(
            instructions=key[0],
            tools=tools.specs() if tools is not None else [],
            voice=config.voice,
            history=self._history.messages(),
        )
        self._turns.log.info("s2s.opened", model=self._adapter.model)
        return key, upstream

    def _cut(self, turn: Turn, played_ms: int | None, *, whole: bool) -> tuple[str, int] | None:
        """Where to truncate the reply's audio item: at what the user heard of it; a reply
        sent whole is cut only if less than all of it was heard (`whole` False)."""
        if self._item is None or turn is not self._item_turn:
            return None
        item_id, before = self._item
        heard = max(0, turn.played_bytes(played_ms) - before)
        if not whole and heard >= turn.audio_sent - before:
            return None
        return item_id, duration_ms(heard)

    async def _truncate(self, upstream: RealtimeConversation, item_id: str, ms: int) -> None:
        self._pending = None
        with contextlib.suppress(ProviderError):  # the connection is gone: nothing to cut
            kept = await upstream.truncate(item_id, ms)
            self._turns.log.info("s2s.truncated", item_id=item_id, audio_end_ms=kept)

    def _drop(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            self._turns.close_soon(upstream)
