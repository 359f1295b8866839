"""Text-to-speech embedded in the process: Piper (ONNX) with the joe-us voice by default.

Piper speaks 22,050 Hz and synthesizes one sentence at a time; each sentence is resampled to
24 kHz and yielded as soon as it is ready, so a reply's first sentence plays while the next is
synthesized. One voice is shared by every session, behind one `InferenceLane`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime
import soxr
from piper import PiperVoice
from piper.config import PiperConfig

from voice_fsm.adapters.base import PCM_SAMPLE_RATE
from voice_fsm.adapters.local.models import piper_voice
from voice_fsm.adapters.local.runtime import InferenceLane, StopFlag
from voice_fsm.adapters.streams import closing_stream
from voice_fsm.audio import float_to_pcm16
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.settings import LocalSettings


class PiperTextToSpeech:
    """One Piper voice, the configured one (`VOICE_FSM_LOCAL__TTS_VOICE`).

    The protocol's `voice` is a vendor voice name that clients may set (OpenAI's "alloy", say);
    it is ignored here. Loading a voice a client names would let clients make the server open
    files of its choosing and keep loading models.
    """

    provider = "local"

    def __init__(self, settings: LocalSettings, lane: InferenceLane | None = None) -> None:
        self._settings = settings
        self._lane = lane if lane is not None else InferenceLane("tts")
        model, config = piper_voice(settings.tts_voice)
        self.model = f"piper {model.stem}"
        self._voice = self._load(model, config)

    def warm_up(self) -> None:
        """Speak one short sentence (blocking): onnxruntime's first run allocates its buffers."""
        for _ in self._speak("Hello there.", StopFlag()):
            pass

    async def synthesize(
        self, text: str, *, voice: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yield PCM16 24 kHz mono, one chunk per sentence (plus the resampler's tail)."""
        if not text.strip():
            return
        try:
            produce = partial(self._speak, text)
            async with closing_stream(self._lane.stream(produce)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except ProviderError:
            raise
        except Exception as err:
            raise _provider_error("failed", err) from err

    async def aclose(self) -> None:
        """Nothing to release: onnxruntime frees its session with the voice."""

    def _speak(self, text: str, stop: StopFlag) -> Iterator[bytes]:
        """Blocking: synthesize sentence by sentence; runs in the lane's worker thread."""
        speaker = self._voice
        # One resampler per reply: it carries its filter's state across sentence boundaries,
        # so they join without a click, and holds back a few samples until the final flush.
        resampler = soxr.ResampleStream(
            speaker.config.sample_rate, PCM_SAMPLE_RATE, 1, dtype="float32"
        )
        for sentence in speaker.synthesize(text):
            stop.check()
            samples = resampler.resample_chunk(sentence.audio_float_array)
            if len(samples):
                yield float_to_pcm16(samples)
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield float_to_pcm16(tail)

    def _load(self, model: Path, config: Path) -> PiperVoice:
        # Like PiperVoice.load, but with the thread count from the settings and no busy-waiting
        # between runs: the threads would spin on cores the language model is using.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self._settings.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return PiperVoice(
                config=PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8"))),
                session=onnxruntime.InferenceSession(
                    str(model), sess_options=options, providers=["CPUExecutionProvider"]
                ),
            )
        except Exception as err:  # a corrupt model or config
            raise _provider_error(f"could not load {model.name}", err) from err


def _provider_error(what: str, err: Exception) -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        f"The local text-to-speech {what}: {type(err).__name__}: {err}",
        stage=Stage.TTS,
    )
