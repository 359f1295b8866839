"""How each stage's OpenAI adapter is built, what it needs and when ``auto`` picks it: the
builders of the ``openai`` and ``openai-realtime`` rows of the provider tables (`registry`).

The adapters are imported when built, so a set-up without OpenAI does not pay for the SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from voice_fsm.adapters.entry import Build, Detectors, Reach

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from voice_fsm.adapters.base import LanguageModel, SpeechToText, TextToSpeech, TurnDetector
    from voice_fsm.adapters.openai.realtime_speech_to_speech import OpenAISpeechToSpeech
    from voice_fsm.settings import Settings


LiveMode = Literal["on", "off", "try"]
"""Whether OpenAI speech-to-text transcribes while the user talks (Realtime API): ``try`` is a
compatible server asked once whether it has a Realtime transcription endpoint."""


def live_mode(settings: Settings) -> LiveMode:
    """``auto``: on for OpenAI's own API, tried on a compatible server at a base URL."""
    live = settings.stt.live
    if live == "auto":
        return "on" if settings.base_url_for(settings.stt) is None else "try"
    return "on" if live else "off"


def live_transcription(settings: Settings) -> bool:
    """Whether OpenAI speech-to-text surely transcribes while the user talks."""
    return live_mode(settings) == "on"


# ------------------------------------------------------------------ what they need, and auto


def needs_key(reach: Reach) -> str | None:
    """A key, or a base URL (a compatible server may take none)."""
    if reach.key or reach.base_url:
        return None
    return f"OPENAI_API_KEY (or VOICE_FSM_{reach.stage.upper()}__API_KEY)."


def has_key(reach: Reach) -> bool:
    """``auto`` with a key: OpenAI (or the compatible server at the base URL)."""
    return reach.key


def reaches(reach: Reach) -> bool:
    """``auto`` with a key or a base URL (a compatible server may take no key)."""
    return reach.key or reach.base_url


def speech_to_speech_auto(reach: Reach) -> bool:
    """``auto`` with a key or a base URL, except OPENAI_API_KEY alone while every cascade stage
    has its own base URL: that key is the compatible servers' key, never sent to OpenAI."""
    settings = reach.settings
    if reach.base_url or settings.s2s.api_key is not None:
        return True
    elsewhere = all(getattr(settings, stage).base_url for stage in ("stt", "llm", "tts"))
    return reach.key and not elsewhere


def speech_api_auto(reach: Reach) -> bool:
    """``auto`` speaks through the Speech API at a compatible server's base URL only."""
    return reach.key and reach.base_url


def realtime_speech_auto(reach: Reach) -> bool:
    """``auto`` speaks through Realtime on OpenAI's own API: its Speech API models shut down on
    2027-01-06."""
    return reach.key and not reach.base_url


def realtime_stt(reach: Reach) -> bool:
    """Speech-to-text runs through OpenAI's Realtime API (its VAD can find turns); ``auto``
    does not count on a compatible server's having it."""
    return reach.stt == "openai" and live_transcription(reach.settings)


def needs_realtime_stt(reach: Reach) -> str | None:
    if reach.stt == "openai" and live_mode(reach.settings) != "off":
        return None
    return (
        "speech-to-text through OpenAI's Realtime API: VOICE_FSM_STT__PROVIDER=openai (or auto, "
        "with OPENAI_API_KEY) and live transcription (VOICE_FSM_STT__LIVE=true, or auto)."
    )


# ------------------------------------------------------------------------------ builders


def _client(build: Build, stage: str) -> AsyncOpenAI:
    from voice_fsm.adapters.openai.client import make_openai_client

    settings = build.settings
    client = build.clients[stage] = make_openai_client(settings, getattr(settings, stage))
    return client


def speech_to_text(build: Build) -> SpeechToText:
    """Live transcription through Realtime, with completed recordings (and a failed live
    session) sent to the file API; or the file API alone. On a compatible server with live
    ``auto``, the first live turn asks whether the server has Realtime transcription."""
    from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
    from voice_fsm.adapters.openai.stt import OpenAISpeechToText

    settings = build.settings
    client = _client(build, "stt")
    stt: SpeechToText = OpenAISpeechToText(settings.stt, client, build.secrets)
    mode = live_mode(settings)
    if mode != "off":
        server = settings.base_url_for(settings.stt) if mode == "try" else None
        stt = OpenAIRealtimeSpeechToText(
            settings.stt, client, build.secrets, fallback=stt, probe=server
        )
    return stt


def language_model(build: Build) -> LanguageModel:
    from voice_fsm.adapters.openai.llm import OpenAILanguageModel

    return OpenAILanguageModel(build.settings.llm, _client(build, "llm"), build.secrets)


def speech_api(build: Build) -> TextToSpeech:
    """Provider ``openai`` of text-to-speech: the Speech API, or a compatible server."""
    from voice_fsm.adapters.openai.tts import OpenAITextToSpeech

    return OpenAITextToSpeech(build.settings.tts, _client(build, "tts"), build.secrets)


def realtime_speech(build: Build) -> TextToSpeech:
    """Provider ``openai-realtime`` of text-to-speech."""
    from voice_fsm.adapters.openai.realtime_tts import OpenAIRealtimeTextToSpeech

    return OpenAIRealtimeTextToSpeech(build.settings.tts, _client(build, "tts"), build.secrets)


def realtime_turns(build: Build) -> Detectors:
    """The Realtime transcription session's own VAD: one connection per hands-free stream."""
    from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
    from voice_fsm.adapters.openai.realtime_turns import turn_detection

    stt = build.stt
    assert isinstance(stt, OpenAIRealtimeSpeechToText)  # what needs_realtime_stt asked for
    detection = turn_detection(build.settings.vad)

    async def open_turns(*, language: str | None) -> TurnDetector:
        return await stt.detect_turns(language=language, turn_detection=detection)

    return Detectors(turns=open_turns)


def speech_to_speech(build: Build) -> OpenAISpeechToSpeech:
    """Provider ``openai-realtime`` of speech-to-speech mode: one Realtime session per voice
    session, opened at its first speech-to-speech turn. Its client is left out of the start-up
    check (`build.clients`): a Realtime-only server may have no ``/models`` to ask."""
    from voice_fsm.adapters.openai.client import make_openai_client
    from voice_fsm.adapters.openai.realtime_speech_to_speech import OpenAISpeechToSpeech

    settings = build.settings.s2s
    return OpenAISpeechToSpeech(
        make_openai_client(build.settings, settings),
        model=settings.model,
        voice=build.settings.tts.voice,
        timeout=settings.timeout,
        transcription_model=settings.transcription_model,
        secrets=build.secrets,
    )
