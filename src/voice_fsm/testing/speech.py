"""Speech for tests and benchmarks: real speech made offline with the Piper voice the project
ships (the `local` extra), and a synthetic voiced signal that needs nothing."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from voice_fsm.audio import SAMPLE_RATE, float_to_pcm16, resample


@lru_cache(maxsize=1)
def _voice() -> Any:
    from piper import PiperVoice

    from voice_fsm.adapters.local.models import piper_voice

    model, config = piper_voice(None)
    return PiperVoice.load(str(model), config_path=str(config))


def spoken(
    text: str, *, lead_s: float = 0.1, total_s: float | None = None, varied: bool = False
) -> bytes:
    """`text` spoken by Piper as PCM16 24 kHz mono, after `lead_s` of silence and padded
    with silence to `total_s` seconds when that is longer.

    The same samples every time unless `varied`: Piper draws random noise for the voice's
    timbre and rhythm, and Whisper base mishears some draws (about 1 in 12 of "What is the
    capital of France?" came out as "...friends?"), which would make a test's transcript
    depend on luck. `varied` keeps Piper's own noise, for evaluations that want its spread.
    """
    from piper import SynthesisConfig

    config = None if varied else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(_voice().synthesize(text, syn_config=config))
    samples = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
    samples = resample(samples, chunks[0].sample_rate, SAMPLE_RATE)
    lead = np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.float32)
    body = np.concatenate([lead, samples])
    if total_s is not None and total_s * SAMPLE_RATE > len(body):
        body = np.concatenate([body, np.zeros(int(total_s * SAMPLE_RATE) - len(body), np.float32)])
    return float_to_pcm16(body)


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * SAMPLE_RATE))


def voiced(seconds: float) -> bytes:
    """A synthetic utterance: a voiced buzz (140 Hz and its harmonics) in syllables, four a
    second, to the end. Speech to a loudness detector (the fake Realtime server's VAD) from
    start to end; the fakes transcribe anything."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    syllables = 0.35 + 0.65 * np.abs(np.sin(np.pi * 4 * t))
    return float_to_pcm16(0.25 * buzz * syllables)
