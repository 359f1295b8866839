"""The settings of the engines that run in the server's own process: the embedded offline
engines (provider `local`) and the fakes (provider `fake`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from voice_fsm.settings_types import SettingsGroup


class LocalSettings(SettingsGroup):
    """The embedded offline engines (provider `local`)."""

    stt_model: str = Field(
        default="base",
        description="faster-whisper model: base (Whisper base, verified; the default), tiny.en "
        "(faster on 30 s windows, less accurate), a model directory, or a hub name",
    )
    stt_short_window: bool | None = Field(
        default=None,
        description="decode a turn on a window cut to its length instead of 30 s (several "
        "times faster); unset: on, except for tiny models, which start the utterance over on "
        "short windows",
    )
    stt_beam_size: int = Field(
        default=1, ge=1, le=10, description="beam size of the local transcription (1 is fastest)"
    )
    llm_model: str = Field(
        default="qwen2.5-coder-0.5b",
        description="qwen2.5-coder-0.5b (Qwen2.5-Coder-0.5B-Instruct, verified), smollm2-135m "
        "(SmolLM2-135M-Instruct: faster, often wrong), or a path to a GGUF file",
    )
    model_cache: Path | None = Field(
        default=None,
        description="where the Qwen GGUF is assembled; unset: $XDG_CACHE_HOME/voice-fsm/models "
        "or ~/.cache/voice-fsm/models",
    )
    llm_context: int = Field(
        default=2048, ge=256, description="context window of the local language model, in tokens"
    )
    llm_soft_max_tokens: int = Field(
        default=48, gt=0, description="past this many tokens the reply stops at a sentence end"
    )
    llm_max_tokens: int = Field(
        default=96, gt=0, description="longest reply, in tokens; an unfinished sentence is dropped"
    )
    llm_temperature: float = Field(default=0.0, ge=0, le=2, description="0: greedy decoding")
    llm_frequency_penalty: float = Field(
        default=0.5,
        ge=-2,
        le=2,
        description="against the reply's repeated words (loops in lists); digits are exempt",
    )
    llm_number_word_bias: float = Field(
        default=-5.0,
        ge=-100,
        le=0,
        description="logit bias against spelled-out numbers (two to hundred), so the model "
        "writes digits: a small model knows counts better in digits; 0: off",
    )
    tts_voice: str | None = Field(
        default=None, description="Piper voice .onnx (its .onnx.json beside it); unset: joe-us"
    )
    threads: int = Field(default=2, ge=1, description="CPU threads per engine")


class FakeSettings(SettingsGroup):
    """Behaviour of the `fake` providers (tests, demos and benchmarks)."""

    transcript: str = Field(
        default="What is the capital of France?", description="what the fake speech-to-text hears"
    )
    reply: str = Field(
        default="The capital of France is Paris.", description="what the fake language model says"
    )
    stt_delay: float = Field(default=0.05, ge=0, description="seconds the transcription takes")
    llm_first_token_delay: float = Field(
        default=0.05, ge=0, description="seconds before the first token"
    )
    llm_token_delay: float = Field(default=0.01, ge=0, description="seconds between tokens")
    tts_first_audio_delay: float = Field(
        default=0.05, ge=0, description="seconds before the first audio"
    )
    tts_chunk_delay: float = Field(default=0.0, ge=0, description="seconds between audio chunks")
