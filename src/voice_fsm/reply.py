"""A reply spoken while it is written.

The language model's text is cut into speakable pieces (`speech_pieces`) as it streams in;
each piece goes to text-to-speech while the model goes on, and the audio goes out in order,
re-framed. The writer and the speaker are two tasks joined by a queue of pieces.

When the model calls tools, the text it wrote before the calls is spoken (the speaker goes
on), the calls run (`acting.act`) and the model is asked again with their results, up to
`max_rounds` times; a filler phrase joins the queue when the tools are slow and nothing has
been said yet. The speaker is the same across rounds, so speech never overlaps.

A speech provider that can say it spoke something else than a piece (`ReportsSpokenText`: a
Realtime model that answered or paraphrased instead of reading) is believed: the reply becomes
what was spoken once the speech is over, so the history the model sees next turn, and the
`response.done` the client shows, hold what the user heard rather than what the model wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from voice_fsm.acting import TurnTools, act
from voice_fsm.adapters.base import (
    ChatMessage,
    LanguageModel,
    ReportsSpokenText,
    TextToSpeech,
    ToolCall,
    ToolSpec,
)
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.audio import bytes_for_ms
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.events import ResponseDelta, ServerEvent
from voice_fsm.speech_pieces import SentenceSplitter
from voice_fsm.turn import Turn

MAX_AUDIO_FRAME = bytes_for_ms(100)
"""Reply audio goes out in frames of at most 100 ms, so clients can start playing early."""

COULD_NOT_FINISH = "Sorry, I could not finish that."
"""Said when the model still calls tools after its last round."""

Send = Callable[[ServerEvent], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[None]]


class Filler(str):
    """A piece that fills a silence while tools run: spoken, but not the model's text."""


async def speak_while_writing(
    turn: Turn,
    llm: LanguageModel,
    tts: TextToSpeech,
    messages: Sequence[ChatMessage],
    *,
    voice: str | None,
    send: Send,
    send_audio: SendAudio,
    tools: TurnTools | None = None,
) -> None:
    """Write `turn`'s reply to `messages` (into `turn.reply`, each delta sent as it comes) and
    speak it piece by piece through `send_audio`, running the tools it calls. Raises the
    writer's failure before the speaker's, which it explains; cancelling this stops both
    streams and the tools. A turn whose reply is text only (`turn.speak` false) is written
    and not spoken. When the speech provider reported saying something else than a piece,
    `turn.reply` is the reply as spoken once this returns."""
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    # A voice that runs pieces on without a pause (Piper) may start on a clause or a phrase.
    splitter = SentenceSplitter(short_first_piece=getattr(tts, "short_first_piece", False))
    writer = asyncio.create_task(_write(turn, llm, messages, pieces, send, tools, splitter))
    speaking = _speak(turn, tts, voice, pieces, send_audio) if turn.speak else _drop(pieces)
    speaker = asyncio.create_task(speaking)
    try:
        done, _ = await asyncio.wait({writer, speaker}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (writer, speaker):
            if task in done:
                task.result()
        await speaker
        if turn.spoken.diverged:
            turn.reply = turn.spoken.text()
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
    tools: TurnTools | None,
    splitter: SentenceSplitter,
) -> None:
    history = list(messages)
    rounds = 0
    max_rounds = tools.settings.max_rounds if tools is not None else 0

    def filler() -> None:
        if tools is not None and tools.settings.fillers and not turn.reply.strip():
            phrases = tools.settings.fillers
            pieces.put_nowait(Filler(phrases[turn.number % len(phrases)]))

    with turn.clock.span("llm"):
        while True:
            offered = tools.specs() if tools is not None else []
            start = len(turn.reply)
            calls = await _write_round(turn, llm, history, offered, splitter, pieces, send)
            if not calls:
                break
            if tools is None or not offered or rounds >= max_rounds:
                # Out of rounds, or calls to tools it was never given: stop here, and say so.
                gap = " " if turn.reply and not turn.reply[-1].isspace() else ""
                await _say(turn, gap + COULD_NOT_FINISH, splitter, pieces, send)
                break
            for piece in splitter.flush():  # what it said before the calls is spoken now
                pieces.put_nowait(piece)
            rounds += 1
            text = turn.reply[start:].strip()
            history += await act(turn, tools, calls, text, send=send, filler=filler)
    turn.reply = turn.reply.strip()
    if not turn.reply:
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "The language model returned an empty reply.", stage=Stage.LLM
        )
    for piece in splitter.flush():
        pieces.put_nowait(piece)
    pieces.put_nowait(None)


async def _write_round(
    turn: Turn,
    llm: LanguageModel,
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolSpec],
    splitter: SentenceSplitter,
    pieces: asyncio.Queue[str | None],
    send: Send,
) -> list[ToolCall]:
    """One call of the model: its text written and queued for speech; the calls it made."""
    calls: list[ToolCall] = []
    sep_written = False
    stream = llm.reply(messages, tools=tools) if tools else llm.reply(messages)
    async with closing_stream(stream):
        async for delta in stream:
            if isinstance(delta, ToolCall):
                calls.append(delta)
                continue
            if not delta:
                continue
            turn.clock.mark_once("llm.first_token")
            if turn.reply and not turn.reply[-1].isspace() and not sep_written:
                delta = " " + delta.lstrip()  # the round's first words after the last's text
            sep_written = True
            await _say(turn, delta, splitter, pieces, send)
    return calls


async def _say(
    turn: Turn,
    text: str,
    splitter: SentenceSplitter,
    pieces: asyncio.Queue[str | None],
    send: Send,
) -> None:
    turn.reply += text
    await send(ResponseDelta(turn=turn.number, text=text))
    for piece in splitter.feed(text):
        pieces.put_nowait(piece)


async def _drop(pieces: asyncio.Queue[str | None]) -> None:
    """A reply asked for as text only: its pieces are not spoken."""
    while await pieces.get() is not None:
        pass


async def _speak(
    turn: Turn,
    tts: TextToSpeech,
    voice: str | None,
    pieces: asyncio.Queue[str | None],
    send_audio: SendAudio,
) -> None:
    pending = b""  # an odd byte left over from the provider's last chunk
    made = 0  # audio given to `send_audio` (a held reply's is sent later)
    while (piece := await pieces.get()) is not None:
        turn.clock.mark_once("tts.start")
        turn.spoken.start_piece(piece, filler=isinstance(piece, Filler))
        if isinstance(tts, ReportsSpokenText):
            instead = turn.spoken.spoken_instead
            stream = tts.synthesize_reporting(piece, voice=voice, spoken_instead=instead)
        else:
            stream = tts.synthesize(piece, voice=voice)
        async with closing_stream(stream):
            async for chunk in stream:
                turn.clock.mark_once("tts.first_audio")
                data = pending + chunk
                cut = len(data) - len(data) % 2
                pending = data[cut:]
                made += cut
                for offset in range(0, cut, MAX_AUDIO_FRAME):
                    await send_audio(data[offset : min(offset + MAX_AUDIO_FRAME, cut)])
    turn.clock.mark("tts.end")
    if not made:
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "The speech provider returned no audio.", stage=Stage.TTS
        )
