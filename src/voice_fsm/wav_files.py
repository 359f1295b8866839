"""WAV files for `talk`: the question read as PCM16 24 kHz mono from any common WAV format
(see `WAV_FORMATS`), with a message saying what a file is when it is not one, and the reply
written back."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from voice_fsm.audio import SAMPLE_RATE, float_to_pcm16, pcm_to_wav, resample
from voice_fsm.cli_parser import WAV_FORMATS
from voice_fsm.talk_result import TalkError


def load_wav(path: str | Path) -> bytes:
    """Read a WAV file (see `WAV_FORMATS`) as PCM16 24 kHz mono."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TalkError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        samples, rate = decode_wav(data)
    except ValueError as err:
        raise TalkError(f"cannot read {path} as a WAV file: {err}") from err
    return float_to_pcm16(resample(samples, rate, SAMPLE_RATE))


_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_FORMAT_NAMES = {
    0x0002: "ADPCM",
    _ALAW: "A-law",
    _MULAW: "µ-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
    0x0050: "MPEG",
}
"""Names of a few compressed formats a WAV file's fmt chunk may declare."""
_OTHER_FILES = (
    (b"ID3", "an MP3 file"),
    (b"\xff\xfb", "an MP3 file"),
    (b"\xff\xf3", "an MP3 file"),
    (b"OggS", "an Ogg file (Vorbis or Opus)"),
    (b"fLaC", "a FLAC file"),
    (b"\x1aE\xdf\xa3", "a WebM or Matroska file"),
    (b"FORM", "an AIFF file"),
    (b"....ftyp", "an MP4 or M4A file"),  # . is any byte
)
CONVERT = "ffmpeg -i IN -ac 1 -ar 24000 OUT.wav"


def _not_a_wav(data: bytes) -> str:
    """Why `data` is not a WAV file, and what to do."""
    for magic, name in _OTHER_FILES:
        if len(data) >= len(magic) and all(m in (46, d) for m, d in zip(magic, data, strict=False)):
            return f"it is {name}, not WAV: convert it first, e.g. {CONVERT}"
    if not data:
        return "the file is empty"
    if data.startswith(b"RIFF"):
        return "a RIFF file cut short, or one that holds something else than WAVE audio"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in data[:512]):
        return "it is text, not audio"
    return "it is not a WAV file (it does not start with RIFF....WAVE)"


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """The samples of a WAV file (float32 mono in [-1, 1]) and their rate. Raises `ValueError`
    saying why when the file is not a WAV file, or one in a format not read here."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(_not_a_wav(data))
    fmt: tuple[int, int, int, int, int] | None = None
    frames: bytes | None = None
    offset = 12
    while offset + 8 <= len(data) and frames is None:
        chunk, size = struct.unpack_from("<4sI", data, offset)
        body = data[offset + 8 : offset + 8 + size]  # a streamed file's last size may be too big
        if chunk == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID's first field
            fmt = (tag, channels, rate, block, bits)
        elif chunk == b"data":
            frames = body
        offset += 8 + size + (size & 1)
    if fmt is None:
        raise ValueError("a WAV file without a fmt chunk")
    if frames is None:
        raise ValueError("a WAV file without a data chunk")
    tag, channels, rate, block, bits = fmt
    if channels < 1 or rate < 1:
        raise ValueError(f"a WAV file with {channels} channels at {rate} Hz")
    samples = _samples(frames, tag, bits)
    width = block // channels if block else (bits + 7) // 8
    if samples is None or width * 8 != bits:
        kind = _FORMAT_NAMES.get(tag, f"format {tag:#06x}")
        if tag in (_PCM, _FLOAT):
            kind = f"{bits}-bit {'integer PCM' if tag == _PCM else 'float'}"
        raise ValueError(f"{kind} samples are not read; this reads {WAV_FORMATS}")
    samples = samples[: len(samples) - len(samples) % channels]
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples.astype(np.float32, copy=False), rate


def _samples(frames: bytes, tag: int, bits: int) -> np.ndarray | None:
    """Float samples of interleaved frames, or None for a format not read here."""
    if tag == _FLOAT and bits in (32, 64):
        raw = np.frombuffer(frames[: len(frames) - len(frames) % (bits // 8)], f"<f{bits // 8}")
        return np.clip(np.nan_to_num(raw.astype(np.float32)), -1.0, 1.0)
    if tag != _PCM or bits not in (8, 16, 24, 32):
        return None
    width = bits // 8
    raw = np.frombuffer(frames[: len(frames) - len(frames) % width], np.uint8).reshape(-1, width)
    if width == 1:  # 8-bit WAV is unsigned
        return (raw[:, 0].astype(np.float32) - 128.0) / 128.0
    # Little-endian signed integers of any width: widen to 32 bits with the sign in the top byte.
    ints = np.zeros((len(raw), 4), np.uint8)
    ints[:, 4 - width :] = raw
    return ints.view("<i4")[:, 0].astype(np.float32) / float(1 << 31)


def save_wav(path: str | Path, pcm: bytes) -> None:
    """Write PCM16 24 kHz mono as a WAV file."""
    try:
        Path(path).write_bytes(pcm_to_wav(pcm, SAMPLE_RATE))
    except OSError as err:
        raise TalkError(f"cannot write {path}: {err.strerror or err}") from err
