"""What a row of the provider tables (`registry`) holds, and what its functions are given.

An `Entry` says how to build a stage's adapter (from a `Build`), what the provider needs that
the stage may not have, and whether ``auto`` picks it (both asked of a `Reach`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from voice_fsm.adapters.base import SpeechToText
    from voice_fsm.hands_free import DetectorFactory, TurnDetectorFactory
    from voice_fsm.settings import Settings

T = TypeVar("T")


class Reach:
    """What a stage can reach: an API key, a base URL, the embedded engines, and (for turn
    detection) the speech-to-text provider chosen. Each is looked up when first asked."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        *,
        engines_installed: Callable[[], bool],
        stt: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.stage = stage
        self._engines_installed = engines_installed
        self._stt = stt

    @cached_property
    def key(self) -> bool:
        """An API key for the stage (its own or OPENAI_API_KEY)."""
        return self.settings.api_key_for(getattr(self.settings, self.stage)) is not None

    @cached_property
    def base_url(self) -> bool:
        """A base URL for the stage (its own or OPENAI_BASE_URL)."""
        return self.settings.base_url_for(getattr(self.settings, self.stage)) is not None

    @cached_property
    def local(self) -> bool:
        """The embedded engines are installed."""
        return self._engines_installed()

    @cached_property
    def stt(self) -> str:
        """The speech-to-text provider chosen."""
        return self._stt()


def _nothing(reach: Reach) -> str | None:
    return None


def _never(reach: Reach) -> bool:
    return False


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One provider of one stage."""

    build: Callable[[Build], T]
    """Makes the adapter; called once per process, when the pipeline is built."""
    needs: Callable[[Reach], str | None] = _nothing
    """What the provider needs that the stage cannot reach, completing "VOICE_FSM_STT__PROVIDER=
    name needs ...", or None."""
    auto: Callable[[Reach], bool] = _never
    """Whether ``auto`` may pick this provider: it takes the first row of the table that may."""


@dataclass
class Build:
    """What a builder gets: the settings, and what the builders of one pipeline share."""

    settings: Settings
    secrets: tuple[str, ...] = ()
    clients: dict[str, AsyncOpenAI] = field(default_factory=dict)
    """The OpenAI clients made, by stage: the start-up check tries their keys and addresses."""
    stt: SpeechToText | None = None
    """The speech-to-text adapter, once built (the provider's turn detection runs on it)."""


@dataclass(frozen=True)
class Detectors:
    """What a turn detection provider gives hands-free mode: a local speech detector per
    stream, or the speech-to-text provider's own turn detection."""

    vad: DetectorFactory | None = None
    turns: TurnDetectorFactory | None = None
