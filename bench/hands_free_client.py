"""A hands-free turn as the benches run it: a session switched to `hands_free`, the microphone
streamed at the pace of speech all the time (the speech, then silence until the reply is done),
and voice-to-voice timed from the END OF SPEECH to the first reply audio byte.

The end of speech is known because the bench puts it there: the question is speech (Piper, its
own trailing near-silence cut off by `trim_speech`) followed by silence the bench adds itself,
so the moment the speech's last frame goes out is the end of speech, as `input_audio.stop`
after the last frame is in push-to-talk. The server's own
`voice_to_voice_ms` in hands-free mode starts later, when its detector has heard the silence
window out (see the README's definition of voice-to-voice).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from voice_fsm.audio import bytes_for_ms
from voice_fsm.events import (
    ErrorEvent,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    TranscriptDoneEvent,
    TurnMetrics,
    VadSpeechStarted,
    VadSpeechStopped,
    server_event_adapter,
)

FRAME_MS = 40
AUDIBLE_RMS = 0.001
"""-60 dBFS: a 10 ms stretch quieter than this is silence."""


def trim_speech(pcm: bytes) -> bytes:
    """`pcm` (PCM16 24 kHz mono) up to the end of its last audible 10 ms: where the speech
    ends (Piper ends its audio with about 0.15 s of near-silence)."""
    step = bytes_for_ms(10) // 2
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
    count = len(samples) // step
    rms = np.sqrt((samples[: count * step].reshape(count, step) ** 2).mean(axis=1))
    audible = np.nonzero(rms > AUDIBLE_RMS)[0]
    return pcm[: (int(audible[-1]) + 1) * step * 2] if len(audible) else pcm


@dataclass
class HandsFreeTurn:
    """One hands-free turn; times are `time.perf_counter()`."""

    speech_s: float
    end_of_speech_at: float | None = None  # the speech's last frame went out
    speech_stopped_at: float | None = None  # vad.speech_stopped arrived
    first_audio_at: float | None = None  # the first reply audio byte arrived
    metrics: TurnMetrics | None = None
    transcript: str = ""
    reply: str = ""
    error: str | None = None
    vad: list[tuple[str, int]] = field(default_factory=list)  # (event, audio_ms)

    @property
    def voice_to_voice_ms(self) -> float | None:
        """End of speech to the first reply audio byte, at this client."""
        if self.end_of_speech_at is None or self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.end_of_speech_at) * 1000

    @property
    def detector_stop_ms(self) -> float | None:
        """End of speech to `vad.speech_stopped` at this client: the silence window and the
        detector's delay."""
        if self.end_of_speech_at is None or self.speech_stopped_at is None:
            return None
        return (self.speech_stopped_at - self.end_of_speech_at) * 1000

    @property
    def ok(self) -> bool:
        return self.error is None and self.metrics is not None and self.first_audio_at is not None


async def hands_free_turn(
    url: str, speech: bytes, *, time_limit: float = 30.0, frame_ms: int = FRAME_MS
) -> HandsFreeTurn:
    """Speak `speech` (PCM16 24 kHz mono, ending where the speech ends) into a new hands-free
    session, then silence until ``turn.metrics``; never raises: a failure is `error`, and
    `time_limit` (from the end of speech) bounds the wait."""
    turn = HandsFreeTurn(speech_s=len(speech) / bytes_for_ms(1000))
    try:
        async with asyncio.timeout(time_limit + turn.speech_s + 10):
            async with connect(url, open_timeout=None, max_size=None) as ws:
                await _run(ws, turn, speech, time_limit, frame_ms)
    except TimeoutError:
        turn.error = turn.error or f"timed out after {time_limit:g} s"
    except (OSError, WebSocketException, ValidationError) as err:
        turn.error = f"{type(err).__name__}: {err}"
    return turn


async def _run(
    ws: ClientConnection, turn: HandsFreeTurn, speech: bytes, time_limit: float, frame_ms: int
) -> None:
    created = server_event_adapter.validate_json(await ws.recv())
    if not isinstance(created, SessionCreated) or "hands_free" not in created.modes:
        turn.error = "the server offers no hands-free mode"
        return
    await ws.send('{"type": "session.update", "session": {"mode": "hands_free"}}')
    while True:
        event = await _event(ws)
        if isinstance(event, ErrorEvent):
            turn.error = f"{event.code}: {event.message}"
            return
        if isinstance(event, SessionUpdated) and event.session.mode == "hands_free":
            break
    done = asyncio.Event()
    microphone = asyncio.create_task(_stream(ws, turn, speech, frame_ms, done))
    try:
        await _listen(ws, turn, time_limit)
    finally:
        done.set()
        await microphone


async def _stream(
    ws: ClientConnection, turn: HandsFreeTurn, speech: bytes, frame_ms: int, done: asyncio.Event
) -> None:
    """The microphone: `speech` then silence, frame after frame on a fixed schedule."""
    size = bytes_for_ms(frame_ms)
    silence = bytes(size)
    start = time.perf_counter()
    index = 0
    try:
        while not done.is_set():
            delay = start + index * frame_ms / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            offset = index * size
            await ws.send(speech[offset : offset + size] if offset < len(speech) else silence)
            if offset < len(speech) <= offset + size:
                turn.end_of_speech_at = time.perf_counter()
            index += 1
    except WebSocketException:
        pass  # the connection ended: _listen says why


async def _listen(ws: ClientConnection, turn: HandsFreeTurn, time_limit: float) -> None:
    deadline = time.perf_counter() + turn.speech_s + time_limit
    while True:
        async with asyncio.timeout_at(_loop_time(deadline)):
            message = await ws.recv()
        now = time.perf_counter()
        if isinstance(message, bytes):
            if turn.first_audio_at is None:
                turn.first_audio_at = now
                if turn.end_of_speech_at is None:
                    turn.error = "reply audio before the end of the speech"
            continue
        event = server_event_adapter.validate_json(message)
        if isinstance(event, VadSpeechStarted | VadSpeechStopped):
            turn.vad.append((event.type, event.audio_ms))
            if isinstance(event, VadSpeechStopped) and turn.speech_stopped_at is None:
                turn.speech_stopped_at = now
        elif isinstance(event, TranscriptDoneEvent):
            turn.transcript = event.text
        elif isinstance(event, ResponseDone):
            turn.reply = event.text
        elif isinstance(event, ErrorEvent):
            turn.error = f"{event.code}: {event.message}"
            return
        elif isinstance(event, TurnMetrics):
            turn.metrics = event
            if turn.first_audio_at is None:
                turn.error = "no reply audio"
            return


async def _event(ws: ClientConnection) -> object:
    while True:
        message = await ws.recv()
        if isinstance(message, str):
            return server_event_adapter.validate_json(message)


def _loop_time(perf_deadline: float) -> float:
    """A `time.perf_counter()` deadline on the event loop's clock."""
    return asyncio.get_running_loop().time() + perf_deadline - time.perf_counter()
