"""Transcribing a turn while it is being recorded.

A `LiveTurn` feeds the recording, an async iterator of chunks that ends when the user stops,
to a `LiveSpeechToText` provider from one task, in order, and forwards the transcript deltas it
recognises. When the user stops, `finish` gives
the final transcript moments later. Any failure of the live path is logged and answered with
`None`, so the session falls back to transcribing the completed recording: the user's turn
is not lost because live transcription broke.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from voice_fsm.adapters.base import LiveSpeechToText, LiveTranscription
from voice_fsm.audio import duration_ms
from voice_fsm.errors import VoiceError


@runtime_checkable
class KnowsCoverage(Protocol):
    """A live transcription that can tell whether its transcript so far (its deltas) covers all
    the audio appended: then the final transcript will say the same (a reply may start on it)."""

    def covers_recording(self) -> bool: ...


class LiveTurn:
    def __init__(
        self,
        stt: LiveSpeechToText,
        audio: AsyncIterator[bytes],
        *,
        language: str | None,
        on_delta: Callable[[str], Awaitable[None]],
        log: Any,
    ) -> None:
        self._stt = stt
        self._audio = audio  # the turn's recording, which ends when the user stops
        self._language = language
        self._on_delta = on_delta
        self._log = log
        self.text = ""
        """The transcript so far: the deltas recognised while the user talks."""
        self._sent = 0  # bytes of the recording given to the provider
        self._text_at = 0  # what had been given when `text` last changed
        self._live: LiveTranscription | None = None
        self._forward: asyncio.Task[None] | None = None
        self._task = asyncio.create_task(self._run(), name="live-transcription")

    async def finish(self) -> str | None:
        """The final transcript, or None when the live path failed (fall back). The recording
        must be complete (closed): this waits until all of it has gone to the provider."""
        await asyncio.wait({self._task})
        live, forward = self._live, self._forward
        if self._task.cancelled() or self._task.exception() is not None or live is None:
            return None
        try:
            text = await live.finish()
        except VoiceError as err:
            self._log.warning("live_transcription.failed", code=err.code.value, message=err.message)
            return None
        if forward is not None:
            # deltas() ends with the final transcript; every delta goes out before it.
            await asyncio.wait({forward}, timeout=1.0)
        return text

    def covered(self) -> bool | None:
        """Whether `text` covers all the recording so far, as the transcription says; None
        when it cannot tell (`KnowsCoverage`)."""
        live = self._live
        return live.covers_recording() if isinstance(live, KnowsCoverage) else None

    @property
    def settled_ms(self) -> int:
        """How much of the recording has gone to the provider since `text` last changed."""
        return duration_ms(self._sent - self._text_at)

    async def aclose(self) -> None:
        for task in (self._task, self._forward):
            if task is not None:
                task.cancel()
                await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: it was logged where it happened
        if self._live is not None:
            await self._live.aclose()

    async def _run(self) -> None:
        try:
            self._live = await self._stt.start_live(language=self._language)
        except VoiceError as err:
            self._log.warning("live_transcription.failed", code=err.code.value, message=err.message)
            raise
        self._forward = asyncio.create_task(self._forward_deltas(self._live))
        await self._pump(self._live)

    async def _pump(self, live: LiveTranscription) -> None:
        async for chunk in self._audio:
            await live.append(chunk)
            self._sent += len(chunk)

    async def _forward_deltas(self, live: LiveTranscription) -> None:
        async for delta in live.deltas():
            if delta.text:
                self.text += delta.text
                self._text_at = self._sent
                await self._on_delta(delta.text)
