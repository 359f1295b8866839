"""A turn's recording as a stream: readers from the start, catching up in one chunk, ending
when it is closed; released audio keeps its length."""

from __future__ import annotations

import asyncio

from voice_fsm.turn_audio import TurnAudio


async def read_all(audio: TurnAudio) -> list[bytes]:
    return [chunk async for chunk in audio.chunks()]


async def test_each_reader_reads_from_the_start_until_the_recording_is_closed() -> None:
    audio = TurnAudio()
    audio.append(b"ab")
    early = asyncio.create_task(read_all(audio))
    await asyncio.sleep(0)
    audio.append(b"cd")
    await asyncio.sleep(0)
    audio.append(b"ef")
    audio.append(b"gh")  # two appends before the reader runs: one chunk
    await asyncio.sleep(0)
    assert not early.done()  # still recording
    audio.close()

    assert b"".join(await early) == b"abcdefgh"
    assert await read_all(audio) == [b"abcdefgh"]  # a reader after the stop: all in one


async def test_a_reader_that_falls_behind_catches_up_in_one_chunk() -> None:
    audio = TurnAudio()
    chunks = audio.chunks()
    audio.append(b"1")
    assert await anext(chunks) == b"1"
    for piece in (b"2", b"3", b"4"):
        audio.append(piece)
    assert await anext(chunks) == b"234"


async def test_released_audio_keeps_its_length_and_ends_its_readers() -> None:
    audio = TurnAudio()
    audio.append(bytes(480))
    reader = asyncio.create_task(read_all(audio))
    await asyncio.sleep(0)
    audio.release()

    assert await reader == [bytes(480)]
    assert len(audio) == 480
    assert await read_all(audio) == []
