"""A session's turns: the current one, how one begins and ends, and what it leaves open.

A turn ends exactly once, with one record (`turn.completed` in the log, and the observers:
metrics, traces). Its live transcription and a hands-free detector are closed off the critical
path (`close_soon`), and the session waits for those closings when it ends. A reply started
ahead of the turn's end (`held`, `speculation.py`) is the turn's too: discarded when the turn
ends without adopting it, its cost in the turn's record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from voice_fsm import provider_requests
from voice_fsm.audio import duration_ms
from voice_fsm.conversation import Conversation
from voice_fsm.events import ResponseDone, ServerEvent
from voice_fsm.speculation import HeldReply, SpeculationStats, TurnClock
from voice_fsm.turn import Turn
from voice_fsm.turn_record import TurnObserver, notify, record_of


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Turns:
    def __init__(
        self,
        session_id: str,
        log: Any,
        *,
        providers: dict[str, str],
        observers: Sequence[TurnObserver],
    ) -> None:
        self.session_id = session_id
        self.current = Turn(0)
        self.log = log  # bound to the current turn's number
        self._providers = providers
        self._observers = observers
        self._closing: set[asyncio.Task[None]] = set()
        self.held: HeldReply | None = None
        """The current turn's reply started ahead of its end, not adopted yet."""
        self.speculation = SpeculationStats()
        """What the current turn's replies started ahead did and cost."""

    def begin(self) -> Turn:
        self._drop_held()
        turn = self.current = Turn(self.current.number + 1)
        turn.clock = TurnClock()
        turn.clock.mark("start")
        self.speculation = SpeculationStats()
        turn.provider_requests = provider_requests.collect()
        self.log = self.log.bind(turn=turn.number)
        return turn

    def finish(
        self, outcome: str, *, mode: str, code: str | None = None, stage: str | None = None
    ) -> None:
        """End the current turn with its one record: its log line, and its observers."""
        turn = self.current
        if turn.outcome is not None:
            return
        turn.outcome = outcome
        self._drop_held()
        turn.clock.mark("end")  # so the record's marks span the whole turn (traces use them)
        record = record_of(
            turn,
            session_id=self.session_id,
            outcome=outcome,
            mode=mode,
            providers=self._providers,
            code=code,
            stage=stage,
            speculation=self.speculation,
        )
        turn.release_audio()
        self.log.info("turn.completed", **record.log_fields())
        notify(self._observers, record, self.log)

    async def close_interrupted_reply(
        self,
        conversation: Conversation,
        *,
        speaking: bool,
        played_ms: int | None,
        send: Callable[[ServerEvent], Awaitable[None]],
    ) -> None:
        """Tell the client how far an interrupted reply got, and keep what was heard of it
        (nothing, if it was not `speaking` yet)."""
        turn = self.current
        if turn.audio_sent:
            await send(turn.audio_done())
        if turn.reply:
            await send(ResponseDone(turn=turn.number, text=turn.reply, interrupted=True))
        kept = speaking and not turn.out_of_band
        heard = conversation.add_interrupted(turn, played_ms) if kept else ""
        self.log.info(
            "reply.interrupted",
            played_ms=played_ms,
            sent_ms=duration_ms(turn.audio_sent),
            heard_chars=len(heard),
        )

    def start_held(self, held: HeldReply) -> None:
        self.held = held
        self.speculation.started += 1
        self.log.info("reply.preemptive", heard_chars=len(held.text))

    def take_held(self) -> HeldReply | None:
        """The held reply, for the thinking stage to adopt (the turn's end is confirmed)."""
        held, self.held = self.held, None
        if held is not None:
            self.speculation.adopted = True
        return held

    async def discard_held(self) -> None:
        """Cancel the held reply, if any, and count its waste; the turn is as before it."""
        held, self.held = self.held, None
        if held is not None:
            await held.discard(self.speculation)
            self.log.info("reply.preemptive_wasted", heard_chars=len(held.text))

    def _drop_held(self) -> None:
        """`discard_held` off the critical path: its waste is counted now."""
        held, self.held = self.held, None
        if held is not None:
            held.count_waste(self.speculation)
            self._track(asyncio.create_task(held.discard(None)))

    async def close_open(self) -> None:
        """The turn is ending: close its live transcription and cancel a reply held for it."""
        await self.discard_held()
        await self.close_live()

    async def close_live(self) -> None:
        live, self.current.live = self.current.live, None
        if live is not None:
            await live.aclose()

    def close_live_soon(self) -> None:
        """Close the turn's live transcription without waiting for it (off the critical path)."""
        live, self.current.live = self.current.live, None
        if live is not None:
            self.close_soon(live)

    def close_soon(self, closable: Closable) -> None:
        self._track(asyncio.create_task(closable.aclose()))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def wait_closed(self) -> None:
        if self._closing:
            await asyncio.wait(self._closing)
