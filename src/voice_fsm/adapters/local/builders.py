"""How each stage's embedded engine is built, what it needs and when ``auto`` picks it: the
builders of the ``local`` rows of the provider tables (`registry`).

Each model is loaded once, with a warm-up call, before the first session arrives. The engines
are imported when built.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from voice_fsm.adapters.entry import Build, Detectors, Reach
from voice_fsm.adapters.local.packages import LOCAL_EXTRA_HINT, local_engines_installed
from voice_fsm.logging_setup import get_logger

if TYPE_CHECKING:
    from voice_fsm.adapters.base import ToolSpec
    from voice_fsm.adapters.local.llm import LlamaLanguageModel
    from voice_fsm.adapters.local.stt import WhisperSpeechToText
    from voice_fsm.adapters.local.tts import PiperTextToSpeech
    from voice_fsm.hands_free import DetectorFactory
    from voice_fsm.settings import Settings
    from voice_fsm.vad import SpeechDetector


def needs_engines(reach: Reach) -> str | None:
    return None if reach.local else "the embedded engines. " + LOCAL_EXTRA_HINT


def without_key(reach: Reach) -> bool:
    """``auto`` without an API key, when the engines are installed."""
    return reach.local and not reach.key


def installed(reach: Reach) -> bool:
    """``auto`` detects turns locally whenever the engines are installed."""
    return reach.local


def speech_to_text(build: Build) -> WhisperSpeechToText:
    from voice_fsm.adapters.local.stt import WhisperSpeechToText

    with _loading("stt"):
        whisper = WhisperSpeechToText(build.settings.local)
        whisper.warm_up()
    return whisper


def language_model(build: Build) -> LlamaLanguageModel:
    from voice_fsm.adapters.local.llm import LlamaLanguageModel

    with _loading("llm"):
        llama = LlamaLanguageModel(build.settings.local)
        # The same system prompt (and built-in tools) as the sessions': their tokens stay in
        # llama.cpp's cache.
        instructions = build.settings.llm.instructions
        if tools := _builtin_specs(build):
            llama.warm_up(instructions)  # the prompt of an answer to tool results
        llama.warm_up(instructions, tools=tools)
    return llama


def _builtin_specs(build: Build) -> list[ToolSpec]:
    """The built-in tools the sessions will offer this model ("auto": on with it)."""
    if build.settings.tools.builtins == "off":
        return []
    from voice_fsm.tools.builtin import builtin_tools
    from voice_fsm.tools.functions import ToolConfigError

    try:
        return [tool.spec for tool in builtin_tools(build.settings.tools.timezone)]
    except ToolConfigError:
        return []  # a bad time zone: the toolbox, built next, says so


def text_to_speech(build: Build) -> PiperTextToSpeech:
    from voice_fsm.adapters.local.tts import PiperTextToSpeech

    with _loading("tts"):
        piper = PiperTextToSpeech(build.settings.local)
        piper.warm_up()
    return piper


def silero(build: Build) -> Detectors:
    """Provider ``local`` of turn detection: Silero VAD."""
    return Detectors(vad=vad_factory(build.settings))


def vad_factory(settings: Settings) -> DetectorFactory | None:
    """Silero VAD when the embedded engines are installed: one model, a detector per stream."""
    if not local_engines_installed():
        return None
    from voice_fsm.vad import SileroVad, SpeechDetector, load_silero_session

    model = load_silero_session()
    vad = settings.vad

    def detector() -> SpeechDetector:
        return SpeechDetector(
            SileroVad(model),
            threshold=vad.threshold,
            min_silence_ms=vad.min_silence_ms,
            min_speech_ms=vad.min_speech_ms,
            speech_pad_ms=vad.pad_ms("local"),
        )

    return detector


@contextmanager
def _loading(stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    get_logger().info(
        "engine.loaded", stage=stage, ms=round((time.perf_counter() - started) * 1000)
    )
