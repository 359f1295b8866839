"""Choosing and building each stage's adapter from the settings, by the provider tables of
`voice_fsm.adapters.registry`: the provider asked for (checked for what it needs), or the one
``auto`` picks; then one adapter per stage, shared by every session of the process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice_fsm.adapters import registry
from voice_fsm.adapters.base import (
    LanguageModel,
    Preparable,
    SpeechToText,
    Startable,
    TextToSpeech,
)
from voice_fsm.adapters.entry import Build, Detectors, Reach
from voice_fsm.adapters.local.packages import (
    LOCAL_EXTRA_HINT,
    LocalModelMissing,
    local_engines_installed,
)
from voice_fsm.hands_free import DetectorFactory, TurnDetectorFactory
from voice_fsm.settings import Settings

if TYPE_CHECKING:
    from voice_fsm.adapters.openai.realtime_speech_to_speech import OpenAISpeechToSpeech
    from voice_fsm.provider_check import ProviderCheck
    from voice_fsm.tools.toolbox import Toolbox

STAGES = ("stt", "llm", "tts")


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
    tools: Toolbox | None = None
    """The tools the server runs (functions, MCP servers, built-ins), for every session."""
    speech: OpenAISpeechToSpeech | None = None
    """Speech-to-speech mode's adapter (a Realtime model hears and answers), if it can run."""

    def speech_info(self) -> dict[str, str] | None:
        """Speech-to-speech mode's provider and model, or None when it cannot run."""
        if self.speech is None:
            return None
        return {"provider": self.speech.provider, "model": self.speech.model}

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
        if self.tools is not None:
            await self.tools.start()

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
        if self.tools is not None:
            await self.tools.aclose()
        if self.check is not None:
            await self.check.aclose()
        for adapter in (self.stt, self.llm, self.tts):
            await adapter.aclose()
        if self.speech is not None:
            await self.speech.aclose()


def resolve_provider(settings: Settings, name: str) -> str:
    """The provider of stage `name` ("stt", "llm" or "tts")."""
    found = _choose(name, getattr(settings, name).provider, _reach(settings, name))
    if found is None:
        raise ConfigError(
            f"No provider for {name}: set OPENAI_API_KEY (in the environment or in .env) to use "
            "OpenAI, or install the embedded offline engines, which need no key: "
            + LOCAL_EXTRA_HINT
            + f" An OpenAI-compatible server works too: VOICE_FSM_{name.upper()}__BASE_URL and "
            f"OPENAI_API_KEY (any value); VOICE_FSM_{name.upper()}__PROVIDER=fake gives canned "
            "answers."
        )
    return found


def resolve_providers(settings: Settings) -> dict[str, str]:
    return {name: resolve_provider(settings, name) for name in STAGES}


def resolve_vad(settings: Settings, stt: str | None = None) -> str | None:
    """Who detects hands-free turns (None: nobody, push-to-talk only). `stt` is the resolved
    speech-to-text provider (resolved here when needed and not given)."""
    if settings.vad.provider == "off":
        return None
    return _choose("vad", settings.vad.provider, _reach(settings, "vad", stt))


def resolve_speech(settings: Settings) -> str | None:
    """Who runs speech-to-speech mode (None: nobody, the cascade only). Raises ConfigError when
    it is every session's default and nobody can run it."""
    choice = settings.s2s.provider
    found = None if choice == "off" else _choose("s2s", choice, _reach(settings, "s2s"))
    if found is None and settings.pipeline == "speech-to-speech":
        raise ConfigError(
            "VOICE_FSM_PIPELINE=speech-to-speech needs a Realtime model: set OPENAI_API_KEY (or "
            "VOICE_FSM_S2S__API_KEY, or VOICE_FSM_S2S__BASE_URL for a compatible server), and "
            "VOICE_FSM_S2S__PROVIDER not off. The embedded offline engines run the cascade only."
        )
    return found


def _reach(settings: Settings, stage: str, stt: str | None = None) -> Reach:
    return Reach(
        settings,
        stage,
        engines_installed=local_engines_installed,
        stt=lambda: stt or resolve_provider(settings, "stt"),
    )


def _choose(stage: str, choice: str, reach: Reach) -> str | None:
    """`choice` if its row has what it needs; for ``auto``, the row that says yes, if any."""
    table = registry.TABLES[stage]
    if choice == "auto":
        return next((name for name, entry in table.items() if entry.auto(reach)), None)
    setting = f"VOICE_FSM_{stage.upper()}__PROVIDER={choice}"
    entry = table.get(choice)
    if entry is None:
        raise ConfigError(f"{setting}: this stage's providers are {', '.join(table)} and auto.")
    missing = entry.needs(reach)
    if missing is not None:
        raise ConfigError(f"{setting} needs {missing}")
    return choice


def build_pipeline(settings: Settings) -> Pipeline:
    providers = resolve_providers(settings)
    vad = resolve_vad(settings, providers["stt"])
    speech = resolve_speech(settings)
    build = Build(settings, settings.secrets())
    try:
        stt = build.stt = registry.SPEECH_TO_TEXT[providers["stt"]].build(build)
        llm = registry.LANGUAGE_MODELS[providers["llm"]].build(build)
        tts = registry.TEXT_TO_SPEECH[providers["tts"]].build(build)
        detectors = registry.TURN_DETECTION[vad].build(build) if vad else Detectors()
        s2s = registry.SPEECH_TO_SPEECH[speech].build(build) if speech else None
    except LocalModelMissing as err:
        raise ConfigError(str(err)) from err
    check = None
    if build.clients:
        from voice_fsm.provider_check import ProviderCheck

        check = ProviderCheck(settings, build.clients)
    tools = build_tools(settings, local_llm=providers["llm"] == "local")
    return Pipeline(
        stt=stt,
        llm=llm,
        tts=tts,
        vad=detectors.vad,
        turns=detectors.turns,
        check=check,
        tools=tools,
        speech=s2s,
    )


def build_tools(settings: Settings, *, local_llm: bool) -> Toolbox | None:
    """The server's tools, or None when there are none to offer. Raises ConfigError for a
    function, a time zone or an MCP server that cannot be used."""
    from voice_fsm.tools.functions import ToolConfigError
    from voice_fsm.tools.toolbox import build_toolbox

    tools = settings.tools
    sources = []
    if tools.mcp_servers:
        try:
            from voice_fsm.tools.mcp_servers import McpToolSource
        except ImportError as err:
            raise ConfigError(
                "VOICE_FSM_TOOLS__MCP_SERVERS needs the mcp extra: pip install 'voice-fsm[mcp]'"
            ) from err
        sources = [McpToolSource(server) for server in tools.mcp_servers]
    try:
        toolbox = build_toolbox(tools, local_llm=local_llm, sources=sources)
    except ToolConfigError as err:
        raise ConfigError(str(err)) from err
    return toolbox if toolbox.names() or sources else None
