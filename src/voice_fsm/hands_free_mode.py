"""A session's hands-free mode: microphone frames in, turn commands out.

The client streams the microphone all the time; the detector (`HandsFree`) decides where
speech starts and ends, and this turns its events into the session's own commands: start a
turn (with the audio since the speech began), stop it. It drives the session only through
`TurnControl`, the same commands a push-to-talk client gives, and imports nothing of it.

Between the two, a pause the detector hears at once (`SpeechPaused`, the embedded detector's)
lets the session start the reply on the live transcript (`paused`, asked again at each frame
while the pause lasts, as the transcript may still grow); speech again (`SpeechResumed`)
cancels it (`resumed`) once it has lasted `RESUMED_MS`: the last syllable of a sentence often
dips below the detector's threshold and comes back. A provider's detector reports no pause:
its turns get no such start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voice_fsm.adapters.base import LiveSpeechToText
from voice_fsm.errors import ErrorCode, InputError, VoiceError
from voice_fsm.events import ServerEvent, VadSpeechStarted, VadSpeechStopped
from voice_fsm.hands_free import Detected, HandsFree, Relay
from voice_fsm.providers import Pipeline
from voice_fsm.recording import check_frame
from voice_fsm.vad_events import SpeechPaused, SpeechResumed, SpeechStarted, VadEvent

RESUMED_MS = 250
"""Speech after a pause that cancels a reply started on it: as long as the shortest speech
the embedded detector takes for a turn (VOICE_FSM_VAD__MIN_SPEECH_MS's default)."""

PROVIDER_VAD_KEEP_MS = 3000
"""Hands-free audio kept for a provider's detector, whose events come a network trip late."""


@dataclass(frozen=True, slots=True)
class TurnControl:
    """What hands-free mode may do to a session: what a push-to-talk client does."""

    recording: Callable[[], bool]
    turn_number: Callable[[], int]
    start_turn: Callable[[LiveSpeechToText | None], Awaitable[None]]
    record: Callable[[bytes], Awaitable[None]]
    stop_turn: Callable[[], Awaitable[None]]
    send: Callable[[ServerEvent], Awaitable[None]]
    paused: Callable[[], Awaitable[None]]
    """The user may have finished: start the reply ahead (`speculation.py`), if it can."""
    resumed: Callable[[], Awaitable[None]]
    """They went on: cancel a reply started ahead."""
    speech_ended: Callable[[int], None] = lambda silence_ms: None
    """The turn's recording ends with this much silence after the speech (`Turn.speech_ended`)."""


async def open_detector(pipeline: Pipeline, *, language: str | None, relay: Relay) -> HandsFree:
    """The pipeline's detector for one stream: the embedded VAD, else the provider's turn
    detection (its events come back through `relay`). Raises InputError when there is none,
    ProviderError when the provider's cannot open."""
    if pipeline.vad is not None:
        return HandsFree(pipeline.vad())
    if pipeline.turns is None:
        raise InputError(
            ErrorCode.INVALID_MESSAGE,
            "hands_free mode needs voice activity detection, which this server does not "
            "have (the embedded engines' or OpenAI Realtime speech-to-text's, "
            "VOICE_FSM_VAD__PROVIDER); use push_to_talk.",
        )
    detector = await pipeline.turns(language=language)
    return HandsFree(detector, relay=relay, keep_ms=PROVIDER_VAD_KEEP_MS)


class HandsFreeMode:
    def __init__(
        self,
        detector: HandsFree,
        session: TurnControl,
        *,
        failed: Callable[[VoiceError], Awaitable[None]],
    ) -> None:
        self.detector = detector
        self._session = session
        self._failed = failed
        self._paused = False  # a pause heard in the turn being recorded, not yet over
        self._resumed_ms: int | None = None  # where speech came back after it, if it did

    async def frame(self, frame: bytes) -> None:
        """The next microphone frame: recorded if a turn is on, and fed to the detector."""
        check_frame(frame)
        was_recording = self._session.recording()
        events = self.detector.feed(frame)
        if was_recording:
            await self._session.record(frame)
        for event in events:
            await self._on_event(event)
        if events or not self._session.recording():
            return
        if self._paused:
            await self._session.paused()
        elif (
            self._resumed_ms is not None
            and self.detector.position_ms - self._resumed_ms >= RESUMED_MS
        ):
            self._resumed_ms = None
            await self._session.resumed()

    async def detected(self, item: Detected) -> None:
        """An event of the provider's detector, relayed in order with the audio and commands;
        one of a stream closed since is ignored."""
        if item.stream is not self.detector:
            return
        if isinstance(item.event, VoiceError):
            await self._failed(item.event)
        else:
            await self._on_event(item.event)

    async def _on_event(self, event: VadEvent) -> None:
        """Speech starts a turn (a barge-in if a reply is in flight) and its end ends it."""
        session = self._session
        self._paused = isinstance(event, SpeechPaused) and session.recording()
        self._resumed_ms = event.audio_ms if isinstance(event, SpeechResumed) else None
        if self._paused:
            await session.paused()
        elif isinstance(event, SpeechPaused | SpeechResumed):
            pass  # not recording; or speech again, which cancels the reply if it goes on
        elif isinstance(event, SpeechStarted):
            recording = session.recording()
            number = session.turn_number() + (0 if recording else 1)
            await session.send(VadSpeechStarted(audio_ms=event.audio_ms, turn=number))
            if not recording:
                await session.start_turn(self.detector.transcriber(event))
                # The detector confirms speech a little after it began: start from there.
                await session.record(self.detector.audio_since(event.audio_ms))
        else:
            await session.send(
                VadSpeechStopped(audio_ms=event.audio_ms, turn=session.turn_number())
            )
            if session.recording():
                session.speech_ended(self.detector.position_ms - event.audio_ms)
                await session.stop_turn()

    async def aclose(self) -> None:
        await self.detector.aclose()
