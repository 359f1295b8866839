"""The rules for a turn's recording: what audio is accepted, how long a turn may be, and its
live transcription while it is recorded. Each check returns the typed error it finds, and the
session decides what it ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from voice_fsm.adapters.base import LiveSpeechToText, SpeechToText
from voice_fsm.audio import duration_ms
from voice_fsm.errors import ErrorCode, InputError
from voice_fsm.events import ServerEvent, TranscriptDeltaEvent
from voice_fsm.live import LiveTurn
from voice_fsm.settings import LimitSettings
from voice_fsm.turn import Turn


def check_frame(frame: bytes) -> None:
    if len(frame) % 2:
        raise InputError(
            ErrorCode.INVALID_AUDIO,
            f"An audio frame of {len(frame)} bytes is not whole PCM16 samples; it was dropped.",
        )


def stray_audio(turn: Turn, state: str) -> InputError | None:
    """Audio outside a turn: an error the first time after `turn`, then dropped silently (and
    always silently after a turn that ended with audio-too-long: the client is still sending
    that turn's audio)."""
    if turn.audio_refused or turn.stray_audio_reported:
        return None
    turn.stray_audio_reported = True
    return InputError(
        ErrorCode.INVALID_AUDIO,
        f"Audio arrived while {state}; send input_audio.start first. "
        "Further audio before the next turn is dropped without an error.",
    )


def too_long(turn: Turn, audio: bytes, limits: LimitSettings) -> InputError | None:
    """Checked before the audio is kept: a turn never holds more than the limit."""
    limit = limits.max_audio_seconds
    if duration_ms(len(turn.audio) + len(audio)) <= limit * 1000:
        return None
    turn.audio_refused = True
    return InputError(
        ErrorCode.AUDIO_TOO_LONG,
        f"The recording passed the limit of {limit:g} s and was discarded.",
    )


def too_short(turn: Turn, limits: LimitSettings) -> InputError | None:
    if turn.audio_in_ms >= limits.min_audio_ms:
        return None
    return InputError(
        ErrorCode.NO_AUDIO,
        f"The recording held {turn.audio_in_ms} ms of audio; at least "
        f"{limits.min_audio_ms} ms is needed.",
    )


def keep(turn: Turn, audio: bytes) -> None:
    turn.audio.append(audio)


def transcribe_live(
    turn: Turn,
    stt: SpeechToText,
    transcriber: LiveSpeechToText | None,
    *,
    language: str | None,
    send: Callable[[ServerEvent], Awaitable[None]],
    log: Any,
) -> None:
    """Transcribe `turn` while it is recorded: by `transcriber` (a hands-free detector that
    heard it), else by the pipeline's speech-to-text if it can; its deltas go to the client.
    A speech-to-text whose ``live_available`` is False (a compatible server found to have no
    Realtime transcription) is not asked: the completed recording is transcribed."""
    live = transcriber or (stt if isinstance(stt, LiveSpeechToText) else None)
    if live is None or not getattr(live, "live_available", True):
        return
    number = turn.number

    async def forward(text: str) -> None:
        await send(TranscriptDeltaEvent(turn=number, text=text))

    turn.live = LiveTurn(live, turn.audio.chunks(), language=language, on_delta=forward, log=log)
