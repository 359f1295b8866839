"""A session's turns: the current one, how one begins and ends, and what it leaves open.

A turn ends exactly once, with one record (`turn.completed` in the log, and the observers:
metrics, traces). Its live transcription and a hands-free detector are closed off the critical
path (`close_soon`), and the session waits for those closings when it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from voice_fsm import provider_requests
from voice_fsm.audio import duration_ms
from voice_fsm.conversation import Conversation
from voice_fsm.events import ResponseDone, ServerEvent
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

    def begin(self) -> Turn:
        turn = self.current = Turn(self.current.number + 1)
        turn.clock.mark("start")
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
        turn.clock.mark("end")  # so the record's marks span the whole turn (traces use them)
        record = record_of(
            turn,
            session_id=self.session_id,
            outcome=outcome,
            mode=mode,
            providers=self._providers,
            code=code,
            stage=stage,
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
        task = asyncio.create_task(closable.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def wait_closed(self) -> None:
        if self._closing:
            await asyncio.wait(self._closing)
