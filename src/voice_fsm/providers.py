"""Choosing and building each stage's adapter from the settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from voice_fsm.adapters.base import (
    LanguageModel,
    Preparable,
    SpeechToText,
    Startable,
    TextToSpeech,
)
from voice_fsm.adapters.local_models import (
    LOCAL_EXTRA_HINT,
    LocalModelMissing,
    local_engines_installed,
)
from voice_fsm.hands_free import DetectorFactory, TurnDetectorFactory
from voice_fsm.logging_setup import get_logger
from voice_fsm.settings import ResolvedProvider, Settings, StageSettings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from voice_fsm.adapters.base import TurnDetector
    from voice_fsm.provider_check import ProviderCheck

STAGES = ("stt", "llm", "tts")
VadKind = Literal["local", "openai-realtime"]


class ConfigError(Exception):
    """The configuration cannot give a working pipeline; the message says what to set."""


@dataclass
class Pipeline:
    """One adapter per stage, shared by every session of the process."""

    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    vad: DetectorFactory | None = None
    """Makes one stream's local speech detector (Silero), for hands-free mode."""
    turns: TurnDetectorFactory | None = None
    """Opens one stream's turn detection at the speech-to-text provider (OpenAI Realtime's
    VAD), for hands-free mode when there is no local detector."""
    check: ProviderCheck | None = None
    """The start-up check of the stages served over OpenAI's API (key, DNS, reachability)."""

    @property
    def hands_free(self) -> bool:
        """Whether sessions can have hands-free mode (else push-to-talk only)."""
        return self.vad is not None or self.turns is not None

    def describe(self) -> dict[str, dict[str, str]]:
        return {
            name: {"provider": adapter.provider, "model": adapter.model}
            for name, adapter in (("stt", self.stt), ("llm", self.llm), ("tts", self.tts))
        }

    async def start(self) -> None:
        """Let the adapters prepare in the background, e.g. open a Realtime session, and
        check the OpenAI providers' keys and addresses."""
        if self.check is not None:
            self.check.start()
        for adapter in (self.stt, self.llm, self.tts):
            if isinstance(adapter, Startable):
                await adapter.start()

    def problems(self) -> list[dict[str, str]]:
        """The stages whose provider failed the start-up check: stage, code, reason, fix."""
        if self.check is None:
            return []
        return [problem.as_dict() for problem in self.check.problems.values()]

    def prepare(self) -> None:
        """A turn begins: let the adapters get ready while the user talks (open a
        connection that the pool may have let go, say)."""
        for adapter in (self.stt, self.llm, self.tts):
            if isinstance(adapter, Preparable):
                adapter.prepare()

    async def aclose(self) -> None:
        if self.check is not None:
            await self.check.aclose()
        for adapter in (self.stt, self.llm, self.tts):
            await adapter.aclose()


def resolve_provider(settings: Settings, name: str) -> ResolvedProvider:
    stage: StageSettings = getattr(settings, name)
    no_key = settings.api_key_for(stage) is None and settings.base_url_for(stage) is None
    if stage.provider.startswith("openai") and no_key:
        raise ConfigError(
            f"VOICE_FSM_{name.upper()}__PROVIDER={stage.provider} needs OPENAI_API_KEY "
            f"(or VOICE_FSM_{name.upper()}__API_KEY)."
        )
    if stage.provider == "local" and not local_engines_installed():
        raise ConfigError(
            f"VOICE_FSM_{name.upper()}__PROVIDER=local needs the embedded engines. "
            + LOCAL_EXTRA_HINT
        )
    if stage.provider != "auto":
        return stage.provider
    if settings.api_key_for(stage) is not None:
        # OpenAI's own API speaks through Realtime (its Speech API models shut down on
        # 2027-01-06); a compatible server at a base_url keeps the Speech API shape.
        if name == "tts" and settings.base_url_for(stage) is None:
            return "openai-realtime"
        return "openai"
    if local_engines_installed():
        return "local"
    raise ConfigError(
        f"No provider for {name}: set OPENAI_API_KEY (in the environment or in .env) to use "
        "OpenAI, or install the embedded offline engines, which need no key: "
        + LOCAL_EXTRA_HINT
        + f" An OpenAI-compatible server works too: VOICE_FSM_{name.upper()}__BASE_URL and "
        f"OPENAI_API_KEY (any value); VOICE_FSM_{name.upper()}__PROVIDER=fake gives canned answers."
    )


def live_transcription(settings: Settings) -> bool:
    """Whether OpenAI speech-to-text transcribes while the user talks (Realtime API)."""
    if settings.stt.live is not None:
        return settings.stt.live
    return settings.base_url_for(settings.stt) is None  # compatible servers rarely have it


def resolve_providers(settings: Settings) -> dict[str, ResolvedProvider]:
    return {name: resolve_provider(settings, name) for name in STAGES}


def resolve_vad(settings: Settings, stt: ResolvedProvider | None = None) -> VadKind | None:
    """Who detects hands-free turns (None: nobody, push-to-talk only). `stt` is the resolved
    speech-to-text provider (resolved here when not given)."""
    choice = settings.vad.provider
    if choice == "off":
        return None
    if choice == "local" and not local_engines_installed():
        raise ConfigError(
            "VOICE_FSM_VAD__PROVIDER=local needs the embedded engines. " + LOCAL_EXTRA_HINT
        )
    if choice == "local" or (choice == "auto" and local_engines_installed()):
        return "local"
    stt = stt or resolve_provider(settings, "stt")
    realtime = stt == "openai" and live_transcription(settings)
    if choice == "openai-realtime" and not realtime:
        raise ConfigError(
            "VOICE_FSM_VAD__PROVIDER=openai-realtime needs speech-to-text through OpenAI's "
            "Realtime API: VOICE_FSM_STT__PROVIDER=openai (or auto, with OPENAI_API_KEY) and "
            "live transcription (VOICE_FSM_STT__LIVE=true; on by default without a base URL)."
        )
    return "openai-realtime" if realtime else None


def build_pipeline(settings: Settings) -> Pipeline:
    providers = resolve_providers(settings)
    # Imported here so a fake-only set-up does not pay for the OpenAI SDK's import.
    from voice_fsm.adapters.fake import fakes_from_settings

    fake_stt, fake_llm, fake_tts = fakes_from_settings(settings.fake)
    secrets = settings.secrets()

    stt: SpeechToText = fake_stt
    llm: LanguageModel = fake_llm
    tts: TextToSpeech = fake_tts
    clients: dict[str, AsyncOpenAI] = {}
    if any(p.startswith("openai") for p in providers.values()):
        from voice_fsm.adapters.openai_client import make_openai_client
        from voice_fsm.adapters.openai_llm import OpenAILanguageModel
        from voice_fsm.adapters.openai_realtime_stt import OpenAIRealtimeSpeechToText
        from voice_fsm.adapters.openai_stt import OpenAISpeechToText
        from voice_fsm.adapters.openai_tts import OpenAITextToSpeech

        if providers["stt"] == "openai":
            client = clients["stt"] = make_openai_client(settings, settings.stt)
            stt = OpenAISpeechToText(settings.stt, client, secrets)
            if live_transcription(settings):
                # Completed recordings (and a failed live session) still go to the file API.
                stt = OpenAIRealtimeSpeechToText(settings.stt, client, secrets, fallback=stt)
        if providers["llm"] == "openai":
            client = clients["llm"] = make_openai_client(settings, settings.llm)
            llm = OpenAILanguageModel(settings.llm, client, secrets)
        if providers["tts"] == "openai":
            client = clients["tts"] = make_openai_client(settings, settings.tts)
            tts = OpenAITextToSpeech(settings.tts, client, secrets)
        elif providers["tts"] == "openai-realtime":
            from voice_fsm.adapters.openai_realtime_tts import OpenAIRealtimeTextToSpeech

            client = clients["tts"] = make_openai_client(settings, settings.tts)
            tts = OpenAIRealtimeTextToSpeech(settings.tts, client, secrets)
    if "local" in providers.values():
        try:
            stt, llm, tts = _build_local(settings, providers, stt, llm, tts)
        except LocalModelMissing as err:
            raise ConfigError(str(err)) from err
    vad = resolve_vad(settings, providers["stt"])
    check = None
    if clients:
        from voice_fsm.provider_check import ProviderCheck

        check = ProviderCheck(settings, clients)
    return Pipeline(
        stt=stt,
        llm=llm,
        tts=tts,
        vad=_vad_factory(settings) if vad == "local" else None,
        turns=_turns_factory(settings, stt) if vad == "openai-realtime" else None,
        check=check,
    )


def _turns_factory(settings: Settings, stt: SpeechToText) -> TurnDetectorFactory:
    """The Realtime transcription session's own VAD: one connection per hands-free stream."""
    from voice_fsm.adapters.openai_realtime_stt import OpenAIRealtimeSpeechToText
    from voice_fsm.adapters.openai_realtime_turns import turn_detection

    assert isinstance(stt, OpenAIRealtimeSpeechToText)  # what resolve_vad asked for
    detection = turn_detection(settings.vad)

    async def open_turns(*, language: str | None) -> TurnDetector:
        return await stt.detect_turns(language=language, turn_detection=detection)

    return open_turns


def _vad_factory(settings: Settings) -> DetectorFactory | None:
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


def _build_local(
    settings: Settings,
    providers: dict[str, ResolvedProvider],
    stt: SpeechToText,
    llm: LanguageModel,
    tts: TextToSpeech,
) -> tuple[SpeechToText, LanguageModel, TextToSpeech]:
    """Load each local model once, with a warm-up call, before the first session arrives."""
    log = get_logger()
    if providers["stt"] == "local":
        from voice_fsm.adapters.local_stt import WhisperSpeechToText

        with _loading(log, "stt"):
            whisper = WhisperSpeechToText(settings.local)
            whisper.warm_up()
        stt = whisper
    if providers["llm"] == "local":
        from voice_fsm.adapters.local_llm import LlamaLanguageModel

        with _loading(log, "llm"):
            llama = LlamaLanguageModel(settings.local)
            # The same system prompt as the sessions': its tokens stay in llama.cpp's cache.
            llama.warm_up(settings.llm.instructions)
        llm = llama
    if providers["tts"] == "local":
        from voice_fsm.adapters.local_tts import PiperTextToSpeech

        with _loading(log, "tts"):
            piper = PiperTextToSpeech(settings.local)
            piper.warm_up()
        tts = piper
    return stt, llm, tts


@contextmanager
def _loading(log: Any, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    log.info("engine.loaded", stage=stage, ms=round((time.perf_counter() - started) * 1000))
