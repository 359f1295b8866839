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

from voice_fsm.adapters.local_live_stt import IncrementalTranscription
from voice_fsm.adapters.local_runtime import InferenceLane, StopFlag
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

    def decode(_pcm: bytes) -> asyncio.Task[str]:
        return asyncio.ensure_future(lane.run(worker.run))

    live = IncrementalTranscription(decode, lambda pcm: [0.9] * (len(pcm) // bytes_for_ms(32)))
    await live.append(bytes(bytes_for_ms(800)))  # past one step: a decode starts
    await _until(worker.started)
    await live.aclose()
    assert worker.stopped.is_set()
    del live
