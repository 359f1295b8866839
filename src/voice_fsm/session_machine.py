"""A session's state machine as the driver uses it: fire a trigger, then start the stage its
new state names; tell the client of each change; let others wait for a condition.

Only the session's driver calls `fire` (the session tests check it), so nothing else needs to
guard the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from transitions.extensions.asyncio import AsyncMachine

from voice_fsm.machine import build_machine
from voice_fsm.stage_runner import StageRunner


class SessionMachine:
    def __init__(
        self,
        model: Any,
        stage: StageRunner,
        *,
        announce: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.model = model
        self._stage = stage
        self._announce = announce
        self._changed = asyncio.Event()
        self.machine: AsyncMachine = build_machine(model, after_state_change=self._after)

    async def fire(self, trigger: str) -> None:
        """Fire a trigger, then start the stage its state names.

        transitions' AsyncMachine catches a `CancelledError` raised inside a trigger's callbacks
        and returns: the driver, cancelled there when the session ends, stops here instead of
        reading on.
        """
        await self.machine.events[trigger].trigger(self.model)
        self._stage.start_named()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    def changed(self) -> None:
        """Let whoever waits (`wait_until`) look again."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it at each change."""
        while not condition():
            await self._changed.wait()

    async def _after(self, event: Any) -> None:
        self.changed()
        await self._announce(self.model.state, event.transition.source)
