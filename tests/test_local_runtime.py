"""InferenceLane: a cancelled caller stops its worker and leaves no exception unretrieved.

The autouse fixture `no_unretrieved_exceptions` (conftest.py) fails any test during which
asyncio reports "Task exception was never retrieved"; the first tests here check that it
catches a task and a future leaked on purpose, the others that a barge-in's cancellation of
an inference (the worker thread stops with `Cancelled`) leaves no such report.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator

import pytest

from voice_fsm.adapters.local import runtime as local_runtime
from voice_fsm.adapters.local.live_stt import IncrementalTranscription
from voice_fsm.adapters.local.runtime import BACKGROUND, URGENT, InferenceLane, StopFlag
from voice_fsm.audio import bytes_for_ms

from support.loop_errors import UnretrievedExceptions


class Boom(Exception):
    pass


async def _raise() -> None:
    raise Boom("nobody looks at me")


@pytest.mark.expect_unretrieved
async def test_the_check_catches_a_leaked_task_exception() -> None:
    task = asyncio.create_task(_raise())
    await asyncio.wait({task})
    del task  # freed with its exception never looked at


@pytest.mark.expect_unretrieved
async def test_the_check_catches_a_leaked_future_exception() -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(Boom("nor at me"))
    del future


@pytest.mark.expect_unretrieved
def test_a_report_names_the_exception() -> None:
    with UnretrievedExceptions() as caught:

        async def leak() -> None:
            task = asyncio.create_task(_raise())
            await asyncio.wait({task})

        asyncio.run(leak())
        gc.collect()
    assert len(caught.reports) == 1
    assert caught.reports[0].startswith("Task exception was never retrieved")
    assert "Boom: nobody looks at me" in caught.reports[0]


class Worker:
    """A blocking inference that runs until its stop flag is set, checking it every ms."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    def run(self, stop: StopFlag) -> str:
        self.started.set()
        try:
            while True:
                stop.check()  # raises local_runtime.Cancelled once the caller is gone
                threading.Event().wait(0.001)
        finally:
            self.stopped.set()

    def items(self, stop: StopFlag) -> Iterator[str]:
        self.started.set()
        try:
            while True:
                stop.check()
                threading.Event().wait(0.001)
                yield "word"
        finally:
            self.stopped.set()


async def _until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 5.0)


async def test_a_cancelled_run_stops_its_worker_and_frees_the_lane() -> None:
    lane = InferenceLane("test")
    worker = Worker()
    caller = asyncio.create_task(lane.run(worker.run))
    await _until(worker.started)
    caller.cancel()
    await asyncio.wait({caller})
    assert caller.cancelled()
    assert worker.stopped.is_set()  # the slot was held until the thread stopped
    assert await lane.run(lambda _stop: "next") == "next"
    del caller
    # The fixture now collects garbage and fails the test if the worker's Cancelled went
    # unretrieved (it did before InferenceLane.run retrieved it).


async def test_a_run_cancelled_twice_still_retrieves_its_worker() -> None:
    lane = InferenceLane("test")
    worker = Worker()
    caller = asyncio.create_task(lane.run(worker.run))
    await _until(worker.started)
    caller.cancel()
    await asyncio.sleep(0)
    caller.cancel()  # while it waits for the thread to stop
    await asyncio.wait({caller})
    assert caller.cancelled()
    assert worker.stopped.is_set()  # the slot is still held until the thread stopped
    del caller


async def test_a_closed_stream_stops_its_worker() -> None:
    lane = InferenceLane("test")
    worker = Worker()
    items = lane.stream(worker.items)
    assert await anext(items) == "word"
    await items.aclose()  # type: ignore[attr-defined]
    assert worker.stopped.is_set()
    assert await lane.run(lambda _stop: "next") == "next"


async def test_a_barge_in_closes_a_live_transcription_mid_decode() -> None:
    """The issue's case: hands-free, the user talks over the reply, the turn's live
    transcription is closed while the lane decodes; the decode's worker stops."""
    lane = InferenceLane("stt")
    worker = Worker()

    def decode(_pcm: bytes, *, background: bool) -> asyncio.Task[str]:
        return asyncio.ensure_future(lane.run(worker.run))

    live = IncrementalTranscription(
        decode, lambda pcm: [0.9] * (len(pcm) // bytes_for_ms(32)), idle_for=lane.idle_for
    )
    await live.append(bytes(bytes_for_ms(800)))  # past one step: a decode starts
    await _until(worker.started)
    await live.aclose()
    assert worker.stopped.is_set()
    del live


class Gate:
    """A blocking inference that holds the lane until `open` is called."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self._open = threading.Event()

    def run(self, _stop: StopFlag) -> str:
        self.started.set()
        self._open.wait(5.0)
        return "gate"

    def open(self) -> None:
        self._open.set()


class Recorder:
    """A lane watcher that keeps what it is told."""

    def __init__(self) -> None:
        self.depths: list[int] = []
        self.waits: list[float] = []

    def lane_queue_depth(self, engine: str, depth: int) -> None:
        self.depths.append(depth)

    def lane_queue_wait(self, engine: str, seconds: float) -> None:
        self.waits.append(seconds)


async def _queued(lane: InferenceLane, depth: int) -> None:
    """Until `depth` callers wait for the lane."""
    for _ in range(1000):
        if len(lane._waiters) >= depth:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{len(lane._waiters)} callers wait, not {depth}")


async def test_a_free_slot_goes_to_the_most_urgent_waiter_then_first_come() -> None:
    lane = InferenceLane("test")
    gate = Gate()
    order: list[str] = []
    holder = asyncio.create_task(lane.run(gate.run))
    await _until(gate.started)

    def job(name: str) -> object:
        return lane.run(lambda _stop: order.append(name), priority=priority[name])

    priority = {"step a": BACKGROUND, "step b": BACKGROUND, "final a": URGENT, "final b": URGENT}
    waiting = []
    for name in ("step a", "final a", "step b", "final b"):  # in order of arrival
        waiting.append(asyncio.create_task(job(name)))  # type: ignore[arg-type]
        await _queued(lane, len(waiting))
    gate.open()
    await asyncio.gather(holder, *waiting)
    assert order == ["final a", "final b", "step a", "step b"]


async def test_idle_for_counts_from_when_nothing_runs_or_waits() -> None:
    lane = InferenceLane("test")
    gate = Gate()
    holder = asyncio.create_task(lane.run(gate.run))
    await _until(gate.started)
    assert lane.idle_for() is None  # running
    waiter = asyncio.create_task(lane.run(lambda _stop: "next", priority=BACKGROUND))
    await _queued(lane, 1)
    gate.open()
    await holder
    # The slot went from the holder to the waiter: the lane was never idle in between.
    assert await waiter == "next"
    idle = lane.idle_for()
    assert idle is not None
    assert 0 <= lane.last_run_s < 1.0  # the waiter's own run, not its wait
    await asyncio.sleep(0.05)
    later = lane.idle_for()
    assert later is not None
    assert later >= idle + 0.04


async def test_a_cancelled_waiter_leaves_the_queue_and_the_lane_keeps_serving() -> None:
    recorder = Recorder()
    local_runtime.watchers.append(recorder)
    try:
        lane = InferenceLane("test")
        gate = Gate()
        holder = asyncio.create_task(lane.run(gate.run))
        await _until(gate.started)
        doomed = asyncio.create_task(lane.run(lambda _stop: "never", priority=URGENT))
        await _queued(lane, 1)
        patient = asyncio.create_task(lane.run(lambda _stop: "served", priority=BACKGROUND))
        await _queued(lane, 2)
        doomed.cancel()
        await asyncio.wait({doomed})
        assert len(lane._waiters) == 1
        gate.open()
        assert await holder == "gate"
        assert await patient == "served"
        assert lane.idle_for() is not None
    finally:
        local_runtime.watchers.remove(recorder)
    # Only the callers that had to wait count in the queue's depth, and it ends empty.
    assert max(recorder.depths) == 2
    assert recorder.depths[-1] == 0
    assert len(recorder.waits) == 2  # the holder's (none) and the patient caller's
    assert recorder.waits[0] == 0.0
    assert recorder.waits[1] > 0.0


class CancelOnHandover:
    """A lane watcher that cancels `task` when the queue shrinks to `depth`: inside the lane's
    hand-over, before (`now`) or just after the slot is handed to the waiter."""

    def __init__(self, depth: int, *, now: bool) -> None:
        self.depth = depth
        self.now = now
        self.task: asyncio.Task[object] | None = None

    def lane_queue_depth(self, engine: str, depth: int) -> None:
        if depth == self.depth and self.task is not None:
            task, self.task = self.task, None
            if self.now:
                task.cancel()
            else:
                asyncio.get_running_loop().call_soon(task.cancel)

    def lane_queue_wait(self, engine: str, seconds: float) -> None:
        pass


@pytest.mark.parametrize("now", [True, False], ids=["before the hand-over", "after it"])
async def test_a_waiter_cancelled_at_the_hand_over_passes_the_slot_on(now: bool) -> None:
    watcher = CancelOnHandover(1, now=now)
    local_runtime.watchers.append(watcher)
    try:
        lane = InferenceLane("test")
        gate = Gate()
        holder = asyncio.create_task(lane.run(gate.run))
        await _until(gate.started)
        first = asyncio.create_task(lane.run(lambda _stop: "first"))
        await _queued(lane, 1)
        second = asyncio.create_task(lane.run(lambda _stop: "second"))
        await _queued(lane, 2)
        watcher.task = first  # type: ignore[assignment]
        gate.open()
        assert await second == "second"
        await asyncio.wait({first, holder})
        assert first.cancelled()
        assert lane.idle_for() is not None  # and the slot came back
        assert lane._free == 1
    finally:
        local_runtime.watchers.remove(watcher)


async def test_a_stream_waits_behind_urgent_runs_when_it_is_background() -> None:
    lane = InferenceLane("test")
    gate = Gate()
    order: list[str] = []
    holder = asyncio.create_task(lane.run(gate.run))
    await _until(gate.started)

    async def drain() -> None:
        async for item in lane.stream(lambda _stop: iter(["stream"]), priority=BACKGROUND):
            order.append(item)

    streaming = asyncio.create_task(drain())
    await _queued(lane, 1)
    urgent = asyncio.create_task(lane.run(lambda _stop: order.append("run")))
    await _queued(lane, 2)
    gate.open()
    await asyncio.gather(holder, streaming, urgent)
    assert order == ["run", "stream"]
