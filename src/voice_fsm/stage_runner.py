"""The session's running stage: at most one task at a time, whose end is a report.

Entering transcribing or thinking names the stage's work (`entering`, a state callback); the
driver starts it once the trigger has told the client of the new state (`start_named`), so
nothing of the stage can overtake that event. The stage's outcome, a result or a typed error,
goes to the driver's inbox (`report`); a report whose task is no longer the running one is
stale (`is_current`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from voice_fsm.errors import ErrorCode, ServerError, VoiceError
from voice_fsm.stages import FirstAudio, StageFailed, StageResult

T = TypeVar("T")
StageWork = Callable[[], Coroutine[Any, Any, StageResult]]


class StageRunner:
    def __init__(
        self,
        report: Callable[[StageResult], None],
        *,
        log: Callable[[], Any],
        on_done: Callable[[], None],
    ) -> None:
        self._report = report
        self._log = log
        self._on_done = on_done
        self.task: asyncio.Task[None] | None = None
        self._named: StageWork | None = None

    def entering(
        self,
        work: Callable[[], Awaitable[T]],
        done: Callable[[asyncio.Task[None], T], StageResult],
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        """A state's enter callback that names `work` as the stage to start; `done` makes
        its report of the value it returns."""

        async def stage() -> StageResult:
            value = await work()
            task = asyncio.current_task()
            assert task is not None
            return done(task, value)

        async def enter(_event: Any) -> None:
            self._named = stage

        return enter

    async def first_audio(self) -> None:
        """From the running stage (any of its tasks): wait until the driver has turned the
        machine to speaking and told the client (`FirstAudio`)."""
        await self.checkpoint(FirstAudio)

    async def checkpoint(
        self, report: Callable[[asyncio.Task[None], asyncio.Future[None]], Any]
    ) -> None:
        """From the running stage: report a step that moves the machine (`report(task, go)`)
        and wait until the driver has fired its trigger and told the client (`go`)."""
        task = self.task
        if task is None:  # stopped: the stage's tasks are being cancelled
            raise asyncio.CancelledError
        go: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._report(report(task, go))
        await go

    def start_named(self) -> None:
        """Start the stage the last trigger's state named, if any."""
        work, self._named = self._named, None
        if work is not None:
            self.task = asyncio.create_task(self._run(work))
            self.task.add_done_callback(lambda _: self._on_done())

    def is_current(self, result: StageResult) -> bool:
        return result.task is self.task

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """Cancel the running stage and wait for it: its reports still queued are stale."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            # wait() rather than await: the stage's CancelledError is not the caller's own.
            await asyncio.wait({task})

    async def _run(self, work: StageWork) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            result = await work()
        except VoiceError as err:
            result = StageFailed(task, err)
        except Exception as err:
            self._log().exception("stage.crashed")
            error = ServerError(ErrorCode.INTERNAL, f"Internal error: {type(err).__name__}")
            result = StageFailed(task, error)
        self._report(result)
