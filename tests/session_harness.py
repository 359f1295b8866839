"""Drives a `Session` the way a WebSocket client would, and records what it receives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from voice_fsm.adapters.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from voice_fsm.audio import bytes_for_ms
from voice_fsm.events import ServerEvent
from voice_fsm.providers import Pipeline
from voice_fsm.session import Session, Submission
from voice_fsm.settings import Settings

TIMEOUT = 5.0


def fake_pipeline(**overrides: Any) -> Pipeline:
    return Pipeline(
        stt=overrides.get("stt", FakeSpeechToText(delay=0.01)),
        llm=overrides.get("llm", FakeLanguageModel(first_token_delay=0.01, token_delay=0.002)),
        tts=overrides.get("tts", FakeTextToSpeech(first_audio_delay=0.01, chunk_delay=0.002)),
    )


class StartingTextToSpeech(FakeTextToSpeech):
    """A fake text-to-speech that has something to prepare (`Startable`): counts `start`s."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1


def make_settings(**limits: Any) -> Settings:
    settings = Settings(_env_file=None, openai_api_key=None)  # type: ignore[call-arg]
    if limits:
        settings = settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})
    return settings


@dataclass
class Received:
    kind: str  # an event's type, or "audio" for a binary frame
    event: ServerEvent | None = None
    audio: bytes = b""


@dataclass
class Client:
    session: Session
    inbox: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    log: list[Received] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def receive(self, event: ServerEvent | bytes) -> None:
        item = (
            Received("audio", audio=event)
            if isinstance(event, bytes)
            else Received(event.type, event=event)
        )
        self.log.append(item)
        await self.inbox.put(item)

    async def send(self, item: Submission) -> None:
        await self.session.submit(item)

    async def until(self, kind: str, **fields: Any) -> list[Received]:
        """Everything received up to and including the first `kind` event matching `fields`."""
        seen: list[Received] = []
        while True:
            item = await asyncio.wait_for(self.inbox.get(), TIMEOUT)
            seen.append(item)
            if item.kind == kind and all(
                getattr(item.event, key) == value for key, value in fields.items()
            ):
                return seen

    async def quiet(self, seconds: float = 0.05) -> list[Received]:
        """Whatever arrives within `seconds`."""
        seen: list[Received] = []
        try:
            while True:
                seen.append(await asyncio.wait_for(self.inbox.get(), seconds))
        except TimeoutError:
            return seen

    async def speak(self, ms: int = 500, frame_ms: int = 40) -> None:
        frame = b"\x10\x00" * (bytes_for_ms(frame_ms) // 2)
        for _ in range(ms // frame_ms):
            await self.send(frame)


STREAMED = frozenset({"audio", "transcript.delta", "response.delta"})
"""Kinds that come many to a turn by nature: a run of them is one entry in `kinds`."""


def kinds(items: list[Received]) -> list[str]:
    """Event kinds in order. Runs of a streamed kind (audio frames, deltas) are one entry;
    anything else counts each time, so a doubled `audio.done` or state change shows."""
    out: list[str] = []
    for item in items:
        label = item.kind
        if item.kind == "state" and item.event is not None:
            label = f"state:{item.event.state}"  # type: ignore[union-attr]
        elif item.kind == "error" and item.event is not None:
            label = f"error:{item.event.code}"  # type: ignore[union-attr]
        if item.kind in STREAMED and out and out[-1] == label:
            continue
        out.append(label)
    return out
