"""Typed errors: one base with a machine `code`, a `stage` and a human `message`.

Adapters translate vendor exceptions into these (``raise ... from err``); the session catches
them once per turn and turns each into exactly one ``error`` event.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar


class Stage(StrEnum):
    INPUT = "input"
    STT = "stt"
    LLM = "llm"
    TTS = "tts"
    SERVER = "server"


class ErrorCode(StrEnum):
    INVALID_MESSAGE = "invalid-message"
    INVALID_STATE = "invalid-state"
    INVALID_AUDIO = "invalid-audio"
    NO_AUDIO = "no-audio"
    AUDIO_TOO_LONG = "audio-too-long"
    NO_SPEECH = "no-speech"
    PROVIDER_AUTH = "provider-auth"
    PROVIDER_RATE_LIMITED = "provider-rate-limited"
    PROVIDER_TIMEOUT = "provider-timeout"
    PROVIDER_UNAVAILABLE = "provider-unavailable"
    PROVIDER_ERROR = "provider-error"
    INTERNAL = "internal-error"


# Waiting and trying again can help for these; the others need a change by someone.
MESSAGE_LEVEL_CODES = frozenset(
    {ErrorCode.INVALID_MESSAGE, ErrorCode.INVALID_STATE, ErrorCode.INVALID_AUDIO}
)
"""Errors in a client's message: reported, and the turn (if any) goes on."""

RETRYABLE_CODES = frozenset(
    {
        ErrorCode.PROVIDER_RATE_LIMITED,
        ErrorCode.PROVIDER_TIMEOUT,
        ErrorCode.PROVIDER_UNAVAILABLE,
    }
)


class VoiceError(Exception):
    """Base of every error a client is told about."""

    stage: ClassVar[Stage] = Stage.SERVER

    def __init__(self, code: ErrorCode, message: str, *, stage: Stage | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if stage is not None:
            self.stage = stage  # type: ignore[misc]

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r}, stage={self.stage})"


class InputError(VoiceError):
    """The client sent something the server cannot use."""

    stage = Stage.INPUT


class ProviderError(VoiceError):
    """A speech-to-text, language model or text-to-speech provider failed."""

    def __init__(self, code: ErrorCode, message: str, *, stage: Stage) -> None:
        super().__init__(code, message, stage=stage)


class NoSpeechError(VoiceError):
    """The recording held audio, but the transcript came back empty."""

    stage = Stage.STT

    def __init__(self, message: str = "No speech was recognised in the recording.") -> None:
        super().__init__(ErrorCode.NO_SPEECH, message)


class ServerError(VoiceError):
    stage = Stage.SERVER


_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{4,}|Bearer\s+\S+)")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove API keys from text that may reach a client or a log line.

    Vendors quote (part of) a rejected key in their error messages; configured keys that do not
    look like OpenAI's are removed by value.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_PATTERN.sub("[redacted]", text)
