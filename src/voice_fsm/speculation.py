"""Preemptive generation: a reply started on the live transcript before the end of the user's
turn is confirmed, its output held until it is.

When the user pauses (hands-free: the detector's first silent frames, long before its silence
window ends the turn) or releases the button (push-to-talk) and the live transcription has
text, the driver starts a `HeldReply` on that text: the language model's request, and the
speech of the pieces it writes. Nothing of it reaches the client: its events, its audio and
its steps that would move the machine (the first audio, tool calls) wait in order in a
bounded queue. When the final transcript comes (`Transcribed`), the driver keeps the held
reply if the final transcript says the same thing in substance (`same_in_substance`), and the
thinking stage adopts it: it sends what was held, then the rest as it comes, through the same
outlet as a reply of its own (`stages.reply_outlet`), so the machine moves exactly as for any
reply. Otherwise, and whenever the user goes on speaking or the turn ends another way, the held
reply is cancelled (its streams closed) and what it cost is counted (`SpeculationStats`, in
the turn's record: the log line and the metrics).

The held reply writes into the turn (its text, its speech pieces, the reply's clock marks),
which no one else writes before the turn's end is confirmed; a discarded one leaves the turn
as it found it (`TurnClock.forget`).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voice_fsm.adapters.base import ChatMessage, ToolSpec
from voice_fsm.audio import bytes_for_ms, duration_ms
from voice_fsm.events import ServerEvent
from voice_fsm.speech_pieces import SpokenReply
from voice_fsm.timing import Stopwatch
from voice_fsm.turn import Turn

SETTLED_MS = 300
"""At the end of a recording (the button released, or the detector's stop), a reply starts on
the live transcript only if the transcript has not changed over the recording's last this
long: it then likely covers the whole recording (a pause, in hands-free, needs no such wait:
the reply follows the transcript as it grows)."""

HELD_AUDIO_MS = 10_000
"""At most this much reply audio waits for the end of the turn; the speech then waits too."""

REPLY_MARKS = (
    "llm.start",
    "llm.first_token",
    "llm.end",
    "tts.start",
    "tts.first_audio",
    "tts.end",
)
"""The turn's clock marks a reply makes before its first audio is sent."""

Report = Callable[[asyncio.Task[None], asyncio.Future[None]], Any]
Checkpoint = Callable[[Report], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[None]]
Send = Callable[[ServerEvent], Awaitable[None]]


def words(text: str) -> list[str]:
    """`text`'s words without case or punctuation: what `same_in_substance` compares."""
    return re.findall(r"\w+(?:'\w+)*", text.lower())


def same_in_substance(heard: str, final: str) -> bool:
    """Whether a reply to `heard` answers `final`: the same words, in the same order, once case,
    punctuation and spacing are set aside ("what is the capital of france" and "What is the
    capital of France?" are the same; "what is the capital" is not)."""
    return bool(words(final)) and words(heard) == words(final)


class TurnClock(Stopwatch):
    """A turn's clock, from which a discarded speculative reply's marks can be taken back."""

    def forget(self, names: Sequence[str]) -> None:
        for name in names:
            self._marks.pop(name, None)


@dataclass
class SpeculationStats:
    """What one turn's preemptive generation did and cost."""

    started: int = 0
    """Replies started before the end of the turn was confirmed."""
    adopted: bool = False
    """One of them became the turn's reply."""
    wasted: int = 0
    """Those cancelled: the user went on, or the final transcript said something else."""
    wasted_llm_chars: int = 0
    """The text the cancelled replies' language model requests had written."""
    wasted_speech_ms: int = 0
    """The audio their speech requests had synthesised, never sent."""


@dataclass(frozen=True, slots=True)
class _Step:
    report: Report
    done: asyncio.Future[None]


_END = object()


class HeldReply:
    """A reply run ahead of the end of its turn, all its output held until `adopt`."""

    def __init__(
        self,
        turn: Turn,
        text: str,
        messages: list[ChatMessage],
        voice: str | None,
        offered: list[ToolSpec],
        work: Callable[[HeldReply], Awaitable[None]],
    ) -> None:
        self.turn = turn
        self.text = text
        """The live transcript it answers."""
        self.messages = messages
        self.voice = voice
        self.offered = offered
        self.audio_bytes = 0
        """The reply audio it was given, sent or not."""
        self._held: deque[object] = deque()
        self._held_audio = 0
        self._cap = bytes_for_ms(HELD_AUDIO_MS)
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(work), name="held-reply")

    def answers(
        self, messages: list[ChatMessage], voice: str | None, offered: list[ToolSpec]
    ) -> bool:
        """Whether it is the reply the turn would ask for now (same prompt, voice and tools)."""
        return (messages, voice, offered) == (self.messages, self.voice, self.offered)

    # -- the outlet the speculative reply writes to

    async def send(self, event: ServerEvent | bytes) -> None:
        await self._put(event)

    async def send_audio(self, frame: bytes) -> None:
        """Counted in its piece now (the speaker starts the next piece before this is sent)."""
        self.audio_bytes += len(frame)
        self.turn.spoken.add_audio(len(frame))
        await self._put(frame)

    async def checkpoint(self, report: Report) -> None:
        """A step that moves the machine (tools): taken in order, by the stage that adopts."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._put(_Step(report, done))
        await done

    # -- its end: adopted or discarded

    async def adopt(self, send: Send, send_audio: SendAudio, checkpoint: Checkpoint | None) -> None:
        """From the thinking stage: send what was held and the rest as it comes, in order,
        until the reply ends; raises its failure. Cancelling this cancels the reply."""
        try:
            while (item := await self._take()) is not _END:
                if isinstance(item, bytes):
                    await send_audio(item)
                elif isinstance(item, _Step):
                    assert checkpoint is not None  # steps come only from a reply with tools
                    await checkpoint(item.report)
                    if not item.done.done():
                        item.done.set_result(None)
                else:
                    await send(item)  # type: ignore[arg-type]  # a ServerEvent
            await self.task
        finally:
            if not self.task.done():
                self.task.cancel()
                await asyncio.wait({self.task})

    def count_waste(self, stats: SpeculationStats) -> None:
        stats.wasted += 1
        stats.wasted_llm_chars += len(self.turn.reply)
        stats.wasted_speech_ms += duration_ms(self.audio_bytes)

    async def discard(self, stats: SpeculationStats | None) -> None:
        """Cancel it and count its waste into `stats` (None: counted already); the turn is
        left as it was before it."""
        self.task.cancel()
        await asyncio.wait({self.task})
        if not self.task.cancelled():
            self.task.exception()  # retrieved: a reply no one asked for failed
        if stats is not None:
            self.count_waste(stats)
        self.turn.reply = ""
        self.turn.spoken = SpokenReply()
        if isinstance(self.turn.clock, TurnClock):
            self.turn.clock.forget(REPLY_MARKS)

    # -- the queue

    async def _run(self, work: Callable[[HeldReply], Awaitable[None]]) -> None:
        try:
            await work(self)
        finally:
            self._held.append(_END)
            self._wake()

    async def _put(self, item: object) -> None:
        while self._held_audio >= self._cap:
            await self._wait()
        self._held.append(item)
        if isinstance(item, bytes):
            self._held_audio += len(item)
        self._wake()

    async def _take(self) -> object:
        while not self._held:
            await self._wait()
        item = self._held.popleft()
        if isinstance(item, bytes):
            self._held_audio -= len(item)
            self._wake()
        return item

    async def _wait(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
