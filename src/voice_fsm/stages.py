"""A turn's stages as functions: inputs in, outputs back.

The session's driver starts each stage as a task when the machine enters its state, and the
stage reports how it ended through the session's inbox, as one of `stage_results`; the
driver fires the matching trigger. A stage never touches the machine. (Home Assistant's
assist pipeline runs its stages the same way: functions that take the previous stage's output.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from voice_fsm.adapters.base import (
    ChatMessage,
    LanguageModel,
    SpeechToText,
    TextToSpeech,
    TranscriptDelta,
    TranscriptDone,
)
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.errors import NoSpeechError
from voice_fsm.events import ServerEvent, TranscriptDeltaEvent
from voice_fsm.live import LiveTurn
from voice_fsm.reply import speak_while_writing
from voice_fsm.speculation import HeldReply
from voice_fsm.stage_results import (
    Acted,
    Acting,
    FirstAudio,
    Spoken,
    StageFailed,
    StageResult,
    Transcribed,
)

if TYPE_CHECKING:
    from voice_fsm.acting import TurnTools
from voice_fsm.turn import Turn

__all__ = [
    "Acted",
    "Acting",
    "FirstAudio",
    "Spoken",
    "StageFailed",
    "StageResult",
    "Transcribed",
    "adopt",
    "held_reply",
    "reply",
    "reply_outlet",
    "transcribe",
]

Send = Callable[[ServerEvent | bytes], Awaitable[None]]


async def transcribe(
    turn: Turn,
    stt: SpeechToText,
    *,
    language: str | None,
    send: Send,
    close_soon: Callable[[LiveTurn], None],
    log: Any,
) -> str:
    """The turn's transcript: from its live transcription when it has one that works, else
    from the completed recording. Raises NoSpeechError when nothing was said. A live
    transcription that worked stays open: closing it now would compete with the reply's first
    requests, here and at the provider (the driver closes it at the first reply audio)."""
    live = turn.live
    if live is not None:
        with turn.clock.span("stt"):
            text = await live.finish()
        if text is not None:
            return _heard(text)
        turn.live = None
        close_soon(live)
        log.info("live_transcription.fallback")
    parts: list[str] = []
    with turn.clock.span("stt"):
        pcm = await turn.audio.completed()  # hands-free: less the silence that ended it
        stream = stt.transcribe(pcm, language=language)
        async with closing_stream(stream):
            async for event in stream:
                if isinstance(event, TranscriptDelta):
                    parts.append(event.text)
                    await send(TranscriptDeltaEvent(turn=turn.number, text=event.text))
                elif isinstance(event, TranscriptDone):
                    parts = [event.text]
    return _heard("".join(parts))


def _heard(text: str) -> str:
    if not text.strip():
        raise NoSpeechError()
    return text.strip()


async def reply(
    turn: Turn,
    llm: LanguageModel,
    tts: TextToSpeech,
    messages: Sequence[ChatMessage],
    *,
    voice: str | None,
    send: Send,
    first_audio: Callable[[], Awaitable[None]],
    tools: TurnTools | None = None,
) -> None:
    """Write the reply to `messages` and speak it as it is written, running the tools it
    calls; `first_audio` is awaited before the first audio frame goes out, and again before
    the first frame after each round of tools (the machine is thinking again by then)."""
    send_audio, tools = reply_outlet(turn, send=send, first_audio=first_audio, tools=tools)
    await speak_while_writing(
        turn, llm, tts, messages, voice=voice, send=send, send_audio=send_audio, tools=tools
    )


def held_reply(
    turn: Turn,
    llm: LanguageModel,
    tts: TextToSpeech,
    messages: list[ChatMessage],
    *,
    text: str,
    voice: str | None,
    tools: TurnTools | None = None,
) -> HeldReply:
    """Start the reply to `messages` (whose user message is the live transcript `text`) ahead
    of the end of the turn, all its output held (`speculation.py`)."""

    async def work(held: HeldReply) -> None:
        await speak_while_writing(
            turn,
            llm,
            tts,
            messages,
            voice=voice,
            send=held.send,
            send_audio=held.send_audio,
            tools=replace(tools, checkpoint=held.checkpoint) if tools is not None else None,
        )

    offered = tools.specs() if tools is not None else []
    return HeldReply(turn, text, messages, voice, offered, work)


async def adopt(
    held: HeldReply,
    turn: Turn,
    *,
    send: Send,
    first_audio: Callable[[], Awaitable[None]],
    tools: TurnTools | None = None,
) -> None:
    """The thinking stage of a turn whose reply was started ahead: it goes out from here as
    `reply` would send it."""
    send_audio, tools = reply_outlet(
        turn, send=send, first_audio=first_audio, tools=tools, counted=True
    )
    await held.adopt(send, send_audio, tools.checkpoint if tools is not None else None)


def reply_outlet(
    turn: Turn,
    *,
    send: Send,
    first_audio: Callable[[], Awaitable[None]],
    tools: TurnTools | None,
    counted: bool = False,
) -> tuple[Callable[[bytes], Awaitable[None]], TurnTools | None]:
    """Where a reply's audio goes (`first_audio` awaited before its first frame, and before
    the first after each round of tools) and the tools' steps that move the machine.
    `counted`: its pieces' audio was counted as it was made (a held reply's)."""
    announced = False

    async def send_audio(frame: bytes) -> None:
        nonlocal announced
        if not announced:
            await first_audio()
            announced = True
        await send(frame)
        if not turn.audio_sent:
            turn.clock.mark("first_audio_sent")
        turn.audio_sent += len(frame)
        if not counted:
            turn.spoken.add_audio(len(frame))

    if tools is not None:
        checkpoint = tools.checkpoint

        async def moved(report: Callable[[asyncio.Task[None], asyncio.Future[None]], Any]) -> None:
            nonlocal announced
            await checkpoint(report)
            if report is Acted:
                announced = False

        tools = replace(tools, checkpoint=moved)
    return send_audio, tools
