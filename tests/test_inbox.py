"""The session inbox: bounded in bytes, so a few large frames or many small commands fill it."""

from __future__ import annotations

import asyncio

import pytest

from voice_fsm.inbox import ITEM_OVERHEAD, ByteBoundedQueue, item_size


async def _blocked(task: asyncio.Task[object]) -> bool:
    """Whether `task` is still waiting after the loop has run everything else it can."""
    for _ in range(5):
        await asyncio.sleep(0)
    return not task.done()


def test_an_item_costs_its_bytes_plus_an_overhead() -> None:
    assert item_size(b"x" * 1000) == 1000 + ITEM_OVERHEAD
    assert item_size(bytearray(10)) == 10 + ITEM_OVERHEAD
    assert item_size("a command") == ITEM_OVERHEAD  # parsed commands: the overhead only


async def test_items_come_out_in_order_and_the_byte_count_follows() -> None:
    queue: ByteBoundedQueue[bytes | str] = ByteBoundedQueue(64 * 1024)
    await queue.put(b"a" * 100)
    await queue.put("stop")
    assert len(queue) == 2
    assert queue.bytes == 100 + 2 * ITEM_OVERHEAD
    assert await queue.get() == b"a" * 100
    assert queue.bytes == ITEM_OVERHEAD
    assert await queue.get() == "stop"
    assert (len(queue), queue.bytes) == (0, 0)


async def test_put_waits_for_room_in_bytes_not_items() -> None:
    frame = b"\x00" * 4000
    queue: ByteBoundedQueue[bytes] = ByteBoundedQueue(3 * item_size(frame))
    for _ in range(3):
        await queue.put(frame)  # exactly full
    fourth = asyncio.create_task(queue.put(frame))
    assert await _blocked(fourth)
    assert queue.bytes == 3 * item_size(frame)

    await queue.get()
    await asyncio.wait_for(fourth, 1)
    assert len(queue) == 3
    assert queue.bytes <= queue.max_bytes


async def test_many_small_commands_fill_it_too() -> None:
    queue: ByteBoundedQueue[str] = ByteBoundedQueue(10 * ITEM_OVERHEAD)
    for _ in range(10):
        await queue.put("cmd")
    eleventh = asyncio.create_task(queue.put("cmd"))
    assert await _blocked(eleventh)
    await queue.get()
    await asyncio.wait_for(eleventh, 1)


async def test_an_item_larger_than_the_bound_goes_in_alone() -> None:
    queue: ByteBoundedQueue[bytes] = ByteBoundedQueue(1000)
    await asyncio.wait_for(queue.put(b"x" * 5000), 1)  # empty: it fits alone, at once
    assert queue.bytes > queue.max_bytes

    small = asyncio.create_task(queue.put(b"y"))
    assert await _blocked(small)  # nothing joins it
    assert await queue.get() == b"x" * 5000
    await asyncio.wait_for(small, 1)

    big = asyncio.create_task(queue.put(b"z" * 5000))
    assert await _blocked(big)  # and it waits until the queue is empty
    assert await queue.get() == b"y"
    await asyncio.wait_for(big, 1)
    assert len(queue) == 1


async def test_get_waits_for_an_item() -> None:
    queue: ByteBoundedQueue[bytes] = ByteBoundedQueue(1000)
    getter = asyncio.create_task(queue.get())
    assert await _blocked(getter)
    await queue.put(b"hi")
    assert await asyncio.wait_for(getter, 1) == b"hi"


async def test_a_waiting_getter_still_wakes_when_another_putter_waits_too() -> None:
    """put() and get() share one event: a putter that starts waiting must not swallow the
    wake-up meant for the getter."""
    queue: ByteBoundedQueue[bytes] = ByteBoundedQueue(item_size(b"x" * 10))
    getter = asyncio.create_task(queue.get())
    assert await _blocked(getter)
    first = asyncio.create_task(queue.put(b"x" * 10))
    second = asyncio.create_task(queue.put(b"y" * 10))  # finds it full and waits
    assert await asyncio.wait_for(getter, 1) == b"x" * 10
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert await asyncio.wait_for(queue.get(), 1) == b"y" * 10


async def test_clear_empties_it_and_lets_a_waiting_put_in() -> None:
    queue: ByteBoundedQueue[bytes] = ByteBoundedQueue(1000)
    await queue.put(b"x" * 900)
    waiting = asyncio.create_task(queue.put(b"y" * 900))
    assert await _blocked(waiting)
    queue.clear()
    await asyncio.wait_for(waiting, 1)
    assert len(queue) == 1
    assert queue.bytes == item_size(b"y" * 900)


async def test_a_cancelled_put_leaves_nothing_behind() -> None:
    queue: ByteBoundedQueue[bytes] = ByteBoundedQueue(1000)
    await queue.put(b"x" * 900)
    waiting = asyncio.create_task(queue.put(b"y" * 900))
    assert await _blocked(waiting)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await queue.get() == b"x" * 900
    assert (len(queue), queue.bytes) == (0, 0)
