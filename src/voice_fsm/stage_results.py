"""What a stage task reports to the session's driver, which fires the matching trigger."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voice_fsm.errors import VoiceError


@dataclass(frozen=True, slots=True)
class StageResult:
    """What a stage task reports to the driver; `task` tells a stale report (a stage the
    driver has cancelled since) from the running stage's."""

    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class Transcribed(StageResult):
    text: str


@dataclass(frozen=True, slots=True)
class FirstAudio(StageResult):
    """The reply's first audio is ready: the driver turns the machine to speaking and tells
    the client, then lets the stage send it (`go`)."""

    go: asyncio.Future[None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Acting(StageResult):
    """The language model called tools: the driver turns the machine to acting, then lets
    the stage run them (`go`)."""

    go: asyncio.Future[None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Acted(StageResult):
    """The tools' results are in: the driver turns the machine to thinking, then lets the
    stage ask the language model again (`go`)."""

    go: asyncio.Future[None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Spoken(StageResult):
    """The last reply audio was sent."""


@dataclass(frozen=True, slots=True)
class StageFailed(StageResult):
    error: VoiceError
