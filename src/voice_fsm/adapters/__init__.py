"""Speech-to-text, language model and text-to-speech adapters: one module per provider family."""

from voice_fsm.adapters.base import (
    ChatMessage,
    LanguageModel,
    SpeechToText,
    TextToSpeech,
    TranscriptDelta,
    TranscriptDone,
    TranscriptEvent,
)

__all__ = [
    "ChatMessage",
    "LanguageModel",
    "SpeechToText",
    "TextToSpeech",
    "TranscriptDelta",
    "TranscriptDone",
    "TranscriptEvent",
]
