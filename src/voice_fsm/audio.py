"""PCM16 helpers: WAV in and out, resampling, durations."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import soxr

SAMPLE_RATE = 24_000
BYTES_PER_SAMPLE = 2


def duration_ms(pcm_bytes: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Milliseconds of PCM16 mono audio in `pcm_bytes` bytes."""
    return round(pcm_bytes * 1000 / (BYTES_PER_SAMPLE * sample_rate))


def bytes_for_ms(ms: float, sample_rate: int = SAMPLE_RATE) -> int:
    return int(ms * sample_rate / 1000) * BYTES_PER_SAMPLE


def pcm_to_wav(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Wrap PCM16 LE mono in a WAV container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(BYTES_PER_SAMPLE)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Audio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def read_wav(data: bytes) -> Audio:
    """Read a PCM WAV (8, 16, 24 or 32-bit integer, any rate, any channel count) as mono float."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        rate = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        ints = (
            raw[:, 0].astype(np.int32)
            | (raw[:, 1].astype(np.int32) << 8)
            | (raw[:, 2].astype(np.int32) << 16)
        )
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported WAV sample width: {width} bytes")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return Audio(samples=samples.astype(np.float32), sample_rate=rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    return np.asarray(soxr.resample(samples, from_rate, to_rate), dtype=np.float32)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    clipped = np.clip(samples, -1.0, 1.0)
    return bytes((clipped * 32767.0).astype("<i2").tobytes())


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def wav_to_pcm16(data: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Any PCM WAV to PCM16 LE mono at `sample_rate`."""
    audio = read_wav(data)
    return float_to_pcm16(resample(audio.samples, audio.sample_rate, sample_rate))


def rms(pcm: bytes) -> float:
    """Root mean square level of PCM16 audio, 0..1."""
    samples = pcm16_to_float(pcm)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
