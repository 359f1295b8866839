"""Which providers each stage has: one table per stage, mapping a provider's name to its row.

Adding a provider is one module (its adapter, and a builder that makes it from a `Build`) and
one row in the stage's table here. The settings accept every name in these tables (plus
``auto``, and ``off`` for turn detection); `voice_fsm.providers` picks a row for each stage
(the name asked for, or the one row whose `Entry.auto` says yes) and builds the pipeline from
it. The tables are read when the settings are validated and when a pipeline is built, so a
test can add a row with ``monkeypatch.setitem(registry.SPEECH_TO_TEXT, "mine", Entry(...))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voice_fsm.adapters import fake
from voice_fsm.adapters.base import LanguageModel, SpeechToText, TextToSpeech
from voice_fsm.adapters.entry import Detectors, Entry
from voice_fsm.adapters.local import builders as local
from voice_fsm.adapters.openai import builders as openai

if TYPE_CHECKING:
    from voice_fsm.adapters.openai.realtime_speech_to_speech import OpenAISpeechToSpeech

SPEECH_TO_TEXT: dict[str, Entry[SpeechToText]] = {
    "openai": Entry(openai.speech_to_text, needs=openai.needs_key, auto=openai.has_key),
    "local": Entry(local.speech_to_text, needs=local.needs_engines, auto=local.without_key),
    "fake": Entry(fake.speech_to_text),
}

LANGUAGE_MODELS: dict[str, Entry[LanguageModel]] = {
    "openai": Entry(openai.language_model, needs=openai.needs_key, auto=openai.has_key),
    "local": Entry(local.language_model, needs=local.needs_engines, auto=local.without_key),
    "fake": Entry(fake.language_model),
}

TEXT_TO_SPEECH: dict[str, Entry[TextToSpeech]] = {
    "openai": Entry(openai.speech_api, needs=openai.needs_key, auto=openai.speech_api_auto),
    "openai-realtime": Entry(
        openai.realtime_speech, needs=openai.needs_key, auto=openai.realtime_speech_auto
    ),
    "local": Entry(local.text_to_speech, needs=local.needs_engines, auto=local.without_key),
    "fake": Entry(fake.text_to_speech),
}

TURN_DETECTION: dict[str, Entry[Detectors]] = {
    "local": Entry(local.silero, needs=local.needs_engines, auto=local.installed),
    "openai-realtime": Entry(
        openai.realtime_turns, needs=openai.needs_realtime_stt, auto=openai.realtime_stt
    ),
}
"""Who finds the turns in hands-free mode. Unlike a stage's, ``auto`` may pick none: then
sessions are push-to-talk only."""

SPEECH_TO_SPEECH: dict[str, Entry[OpenAISpeechToSpeech]] = {
    "openai-realtime": Entry(
        openai.speech_to_speech, needs=openai.needs_key, auto=openai.speech_to_speech_auto
    ),
}
"""Who runs speech-to-speech mode (a Realtime model hears and answers). ``auto`` may pick none:
then sessions run the cascade only."""

TABLES: dict[str, dict[str, Entry[Any]]] = {
    "stt": SPEECH_TO_TEXT,
    "llm": LANGUAGE_MODELS,
    "tts": TEXT_TO_SPEECH,
    "vad": TURN_DETECTION,
    "s2s": SPEECH_TO_SPEECH,
}


def provider_names(*stages: str) -> list[str]:
    """The providers of `stages`, each named once, in the order of their tables."""
    return list(dict.fromkeys(name for stage in stages for name in TABLES[stage]))
