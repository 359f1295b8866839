"""OpenAI's announced model shutdowns, as data, and a startup warning for configured models.

Source: OpenAI's deprecation notices as of 2026-11 (``GET /v1/models`` also reports a
``shutdown_date`` per model). Only stages served by OpenAI itself count: a compatible server
(speaches, Kokoro-FastAPI, Ollama, ...) that accepts the same model names is not retired with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol
from urllib.parse import urlsplit

from voice_fsm.settings import Settings, StageSettings, TtsSettings

OPENAI_API_HOST = "api.openai.com"


@dataclass(frozen=True, slots=True)
class Retirement:
    shutdown_date: date
    replacement: str


_SPEECH_API = Retirement(date(2027, 1, 6), "gpt-realtime-2.1-mini through the Realtime API")
_CHAT = Retirement(date(2027, 1, 14), "gpt-6-luna")
_TRANSCRIPTION = Retirement(
    date(2027, 2, 26), "gpt-transcribe (files) or gpt-live-transcribe (Realtime)"
)

RETIREMENTS: Mapping[str, Retirement] = {
    # Every Speech API model.
    "gpt-4o-mini-tts": _SPEECH_API,
    "tts-1": _SPEECH_API,
    "tts-1-hd": _SPEECH_API,
    "gpt-4.1-mini": _CHAT,
    "gpt-4.1": _CHAT,
    "gpt-4o": _CHAT,
    "gpt-4o-mini": _CHAT,
    "gpt-4o-mini-transcribe": _TRANSCRIPTION,
    "gpt-4o-transcribe": _TRANSCRIPTION,
    "whisper-1": _TRANSCRIPTION,
}
"""Model name → when OpenAI shuts it down and what OpenAI names as its replacement."""

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Shutdown:
    stage: str
    model: str
    shutdown_date: date
    replacement: str
    days_left: int
    """Negative once the date has passed."""


class WarningLogger(Protocol):
    """The part of a structlog logger this module uses."""

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


def retirement_for(model: str) -> Retirement | None:
    """The announced shutdown of `model`, or of the model a dated snapshot name belongs to."""
    name = model.strip().lower()
    return RETIREMENTS.get(name) or RETIREMENTS.get(_SNAPSHOT_SUFFIX.sub("", name))


def scheduled_shutdowns(
    settings: Settings, providers: Mapping[str, str], *, today: date | None = None
) -> list[Shutdown]:
    """The configured models OpenAI has scheduled for shutdown, in stage order.

    `providers` maps a stage name (``stt``, ``llm``, ``tts``) to its resolved provider; only
    stages resolved to ``openai`` and pointed at OpenAI's own API are checked.
    """
    today = today or date.today()
    stages: dict[str, StageSettings] = {
        "stt": settings.stt,
        "llm": settings.llm,
        "tts": settings.tts,
    }
    found: list[Shutdown] = []
    for name, stage in stages.items():
        if providers.get(name) != "openai" or not _is_openai(settings.base_url_for(stage)):
            continue
        model = stage.model_for("openai") if isinstance(stage, TtsSettings) else stage.model
        retirement = retirement_for(model)
        if retirement is None:
            continue
        found.append(
            Shutdown(
                stage=name,
                model=model,
                shutdown_date=retirement.shutdown_date,
                replacement=retirement.replacement,
                days_left=(retirement.shutdown_date - today).days,
            )
        )
    return found


def warn_scheduled_shutdowns(
    settings: Settings,
    providers: Mapping[str, str],
    log: WarningLogger,
    *,
    today: date | None = None,
) -> None:
    """Log one ``model.shutdown_scheduled`` warning per configured model on OpenAI's list."""
    for shutdown in scheduled_shutdowns(settings, providers, today=today):
        log.warning(
            "model.shutdown_scheduled",
            stage=shutdown.stage,
            model=shutdown.model,
            shutdown_date=shutdown.shutdown_date.isoformat(),
            replacement=shutdown.replacement,
            days_left=shutdown.days_left,
        )


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == OPENAI_API_HOST
