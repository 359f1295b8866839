"""A turn's recording as a stream: the driver appends the audio as it arrives, and any number
of readers (the live transcription while the user talks, the completed-recording transcription
after) read it as an async iterator of chunks, each from the start, until it is closed.

A hands-free turn ends when the detector has heard a window of silence: that silence is part of
the recording (the live transcription hears it as it comes) but not of what `completed` gives a
completed-recording transcription, which is paid by the second of audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from voice_fsm.audio import bytes_for_ms


class TurnAudio:
    def __init__(self) -> None:
        self._data = bytearray()
        self._closed = False
        self._grown = asyncio.Event()
        self._released = 0  # its length once released
        self._speech_end: int | None = None  # bytes: `completed` stops there

    def __len__(self) -> int:
        return len(self._data) or self._released

    def append(self, chunk: bytes) -> None:
        self._data += chunk
        self._wake()

    def close(self) -> None:
        """The recording is complete: readers end once they have read it all."""
        self._closed = True
        self._wake()

    def leave_out_end(self, ms: int) -> None:
        """The last `ms` of the recording so far are not speech: `completed` leaves them out."""
        if ms > 0:
            self._speech_end = max(0, len(self._data) - bytes_for_ms(ms))

    async def completed(self) -> bytes:
        """The recording once it is closed, less the end `leave_out_end` named: what a
        completed-recording transcription is sent."""
        pcm = b"".join([chunk async for chunk in self.chunks()])
        return pcm if self._speech_end is None else pcm[: self._speech_end]

    def release(self) -> None:
        """Let the audio go once the turn has ended; its length is still reported."""
        self._released = len(self)
        self._data = bytearray()
        self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Everything appended so far, then each time more comes, all of what came since in
        one chunk (a reader that falls behind catches up in one step)."""
        read = 0
        while True:
            if read < len(self._data):
                chunk = bytes(self._data[read:])
                read += len(chunk)
                yield chunk
                continue
            if self._closed:
                return
            grown = self._grown
            await grown.wait()

    def _wake(self) -> None:
        grown, self._grown = self._grown, asyncio.Event()
        grown.set()
