"""An uploaded audio file (any format FFmpeg reads: wav, mp3, flac, ogg, webm, m4a, ...)
decoded to the adapters' PCM16 24 kHz mono, with a bound on its length: a few megabytes of
compressed audio can decode to hours."""

from __future__ import annotations

import io

from voice_fsm.adapters.base import PCM_SAMPLE_RATE
from voice_fsm.engines.api_errors import invalid

MAX_AUDIO_S = 1500.0
"""The longest recording transcribed (OpenAI's limit for its transcription models)."""
MIN_AUDIO_S = 0.1
FORMATS = "flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, wav, webm"


def decode_upload(data: bytes) -> bytes:
    """PCM16 24 kHz mono of the file `data` (blocking: run it in a thread). Raises the API's
    400 for a file that is not audio, too short or too long."""
    import av

    limit = int(MAX_AUDIO_S * PCM_SAMPLE_RATE) * 2
    pcm = bytearray()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise _not_audio()
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pcm += out.to_ndarray().tobytes()
                if len(pcm) > limit:
                    raise invalid(
                        "file",
                        f"Audio file is too long. Maximum audio length is {MAX_AUDIO_S:g} s.",
                        code="audio_too_long",
                    )
            for out in resampler.resample(None):
                pcm += out.to_ndarray().tobytes()
    except av.FFmpegError:
        raise _not_audio() from None
    if len(pcm) < MIN_AUDIO_S * PCM_SAMPLE_RATE * 2:
        raise invalid(
            "file",
            f"Audio file is too short. Minimum audio length is {MIN_AUDIO_S:g} seconds.",
            code="audio_too_short",
        )
    return bytes(pcm)


def _not_audio() -> Exception:
    return invalid("file", f"Invalid file format. Supported formats: {FORMATS}.")
