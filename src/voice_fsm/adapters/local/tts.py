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

JOIN_SILENCE_S = 0.03
"""Silence kept after a piece that stops mid-sentence (`_short_tail`)."""
SILENCE_LEVEL = 0.01
"""Samples quieter than this (float, full scale 1) after the last sound are the tail."""


class PiperTextToSpeech:
    """One Piper voice, the configured one (`VOICE_FSM_LOCAL__TTS_VOICE`).

    The protocol's `voice` is a vendor voice name that clients may set (OpenAI's "alloy", say);
    it is ignored here. Loading a voice a client names would let clients make the server open
    files of its choosing and keep loading models.
    """

    provider = "local"
    short_first_piece = True
    """A reply's first piece may stop mid-sentence (`SentenceSplitter(short_first_piece=...)`):
    a short text's first audio comes sooner, and the next piece runs on without a pause."""

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
        audio: Iterator[np.ndarray] = (c.audio_float_array for c in speaker.synthesize(text))
        if _mid_sentence(text):
            audio = _short_tail(audio, speaker.config.sample_rate)
        for sentence in audio:
            stop.check()
            samples = resampler.resample_chunk(sentence)
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


def _mid_sentence(text: str) -> bool:
    """Whether `text` stops mid-sentence: a reply's first piece, cut before its sentence ends
    (speech_pieces) so that speech starts sooner."""
    return not text.rstrip().rstrip("\"')]*_`").endswith((".", "!", "?", "…", ",", ";", ":"))


def _short_tail(audio: Iterator[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """`audio` with the silence after its last sound cut to JOIN_SILENCE_S.

    Piper ends every text as a sentence, with about 120 ms of silence; the next piece starts
    with 30-60 ms more. Mid-sentence that is a pause where the listener expects none. Holds
    each chunk until the next comes: a mid-sentence piece is one chunk (one sentence)."""
    held: np.ndarray | None = None
    for chunk in audio:
        if held is not None:
            yield held
        held = chunk
    if held is None:
        return
    loud = np.flatnonzero(np.abs(held) > SILENCE_LEVEL)
    if len(loud):
        held = held[: min(len(held), int(loud[-1]) + 1 + int(JOIN_SILENCE_S * rate))]
    yield held


def _provider_error(what: str, err: Exception) -> ProviderError:
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        f"The local text-to-speech {what}: {type(err).__name__}: {err}",
        stage=Stage.TTS,
    )
