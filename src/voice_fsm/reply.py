"""A reply spoken while it is written.

The language model's text is cut into speakable pieces (`speech_pieces`) as it streams in;
each piece goes to text-to-speech while the model goes on, and the audio goes out in order,
re-framed. The writer and the speaker are two tasks joined by a queue of pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from voice_fsm.adapters.base import ChatMessage, LanguageModel, TextToSpeech
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.events import ResponseDelta, ServerEvent
from voice_fsm.speech_pieces import SentenceSplitter
from voice_fsm.turn import Turn

MAX_AUDIO_FRAME = bytes_for_ms(100)
"""Reply audio goes out in frames of at most 100 ms, so clients can start playing early."""

Send = Callable[[ServerEvent], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[None]]


async def speak_while_writing(
    turn: Turn,
    llm: LanguageModel,
    tts: TextToSpeech,
    messages: Sequence[ChatMessage],
    *,
    voice: str | None,
    send: Send,
    send_audio: SendAudio,
) -> None:
    """Write `turn`'s reply to `messages` (into `turn.reply`, each delta sent as it comes) and
    speak it piece by piece through `send_audio`. Raises the writer's failure before the
    speaker's, which it explains; cancelling this stops both streams."""
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    writer = asyncio.create_task(_write(turn, llm, messages, pieces, send))
    speaker = asyncio.create_task(_speak(turn, tts, voice, pieces, send_audio))
    try:
        done, _ = await asyncio.wait({writer, speaker}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (writer, speaker):
            if task in done:
                task.result()
        await speaker
    finally:
        for task in (writer, speaker):
            task.cancel()
        await asyncio.wait({writer, speaker})


async def _write(
    turn: Turn,
    llm: LanguageModel,
    messages: Sequence[ChatMessage],
    pieces: asyncio.Queue[str | None],
    send: Send,
) -> None:
    splitter = SentenceSplitter()
    with turn.clock.span("llm"):
        stream = llm.reply(messages)
        async with closing_stream(stream):
            async for delta in stream:
                if not delta:
                    continue
                turn.clock.mark_once("llm.first_token")
                turn.reply += delta
                await send(ResponseDelta(turn=turn.number, text=delta))
                for piece in splitter.feed(delta):
                    pieces.put_nowait(piece)
    turn.reply = turn.reply.strip()
    if not turn.reply:
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "The language model returned an empty reply.", stage=Stage.LLM
        )
    for piece in splitter.flush():
        pieces.put_nowait(piece)
    pieces.put_nowait(None)


async def _speak(
    turn: Turn,
    tts: TextToSpeech,
    voice: str | None,
    pieces: asyncio.Queue[str | None],
    send_audio: SendAudio,
) -> None:
    pending = b""  # an odd byte left over from the provider's last chunk
    while (piece := await pieces.get()) is not None:
        turn.clock.mark_once("tts.start")
        turn.spoken.start_piece(piece)
        stream = tts.synthesize(piece, voice=voice)
        async with closing_stream(stream):
            async for chunk in stream:
                turn.clock.mark_once("tts.first_audio")
                data = pending + chunk
                cut = len(data) - len(data) % 2
                pending = data[cut:]
                for offset in range(0, cut, MAX_AUDIO_FRAME):
                    await send_audio(data[offset : min(offset + MAX_AUDIO_FRAME, cut)])
    turn.clock.mark("tts.end")
    if not turn.audio_sent:
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "The speech provider returned no audio.", stage=Stage.TTS
        )
