"""How slowly the fake providers answer in a benchmark, and what that costs a turn at least.

A `LatencyProfile` holds the providers' latencies; `fake_openai_config` and
`fake_realtime_config` turn it into the fakes' settings. `critical_path_s` is the providers'
unavoidable time from the end of the user's audio to the first reply audio in the pipelined
design (the reply spoken piece by piece while it is written): whatever a turn takes beyond it
is the server's own overhead. `sequential_s` is the same for the sequential design: upload the
completed recording, wait for the whole reply, then speak it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice_fsm.speech_pieces import SentenceSplitter
from voice_fsm.testing.fake_openai import FakeOpenAIConfig, speech_pcm, words

if TYPE_CHECKING:
    from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

TRANSCRIPT = "What is the capital of France?"
REPLY = (
    "The capital of France is Paris. It sits on the Seine in the north of the country, "
    "and it is also its largest city."
)
"""Two sentences, as the default instructions ask for: the first can be spoken while the
language model writes the second."""
SPEECH_CHUNK_BYTES = 4800  # 100 ms of PCM16 at 24 kHz
_CHUNK_S = SPEECH_CHUNK_BYTES / 2 / 24_000


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Provider latencies in seconds. The defaults follow the measurements of the seed's
    providers: 1.7 s to transcribe 2 s of recorded audio."""

    stt_base_s: float = 0.5
    """Transcription of a completed recording: this, plus ..."""
    stt_per_audio_s: float = 0.6
    """... this per second of audio."""
    live_final_s: float = 0.3
    """Live transcription: from the end of the audio (commit) to the final transcript."""
    live_delta_every_ms: int = 200
    """Live transcription: one transcript word per this much audio, while it is sent."""
    llm_first_token_s: float = 0.4
    llm_tokens_per_s: float = 25.0
    tts_first_audio_s: float = 0.6
    tts_realtime_factor: float = 4.0
    """After the first audio, speech arrives this many times faster than it plays."""
    realtime_connect_s: float = 0.15
    """A new Realtime session: from the WebSocket's accept to ``session.created``. Against
    OpenAI a new connection costs 0.1-0.3 s; not part of the critical path, since sessions
    are opened ahead of time (speech's kept open between sentences, live transcription's as
    the recording starts)."""

    @property
    def llm_token_interval_s(self) -> float:
        return 1.0 / self.llm_tokens_per_s

    @property
    def tts_chunk_interval_s(self) -> float:
        return _CHUNK_S / self.tts_realtime_factor


DEFAULT_PROFILE = LatencyProfile()


def fake_openai_config(
    profile: LatencyProfile, *, transcript: str = TRANSCRIPT, reply: str = REPLY
) -> FakeOpenAIConfig:
    """The fake HTTP API (transcriptions, chat, speech) answering with `profile`'s latencies."""
    return FakeOpenAIConfig(
        transcript=transcript,
        reply=reply,
        stt_delay=profile.stt_base_s,
        stt_delay_per_audio_s=profile.stt_per_audio_s,
        llm_first_token_delay=profile.llm_first_token_s,
        llm_token_delay=profile.llm_token_interval_s,
        tts_first_audio_delay=profile.tts_first_audio_s,
        tts_chunk_delay=profile.tts_chunk_interval_s,
        tts_chunk_bytes=SPEECH_CHUNK_BYTES,
    )


def fake_realtime_config(
    profile: LatencyProfile, *, transcript: str = TRANSCRIPT
) -> FakeRealtimeConfig:
    """The fake Realtime API (live transcription, speech) answering with `profile`'s latencies."""
    from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

    return FakeRealtimeConfig(
        transcript=transcript,
        delta_every_ms=profile.live_delta_every_ms,
        transcription_delay=profile.live_final_s,
        session_delay=profile.realtime_connect_s,
        tts_first_audio_delay=profile.tts_first_audio_s,
        tts_chunk_delay=profile.tts_chunk_interval_s,
        tts_chunk_bytes=SPEECH_CHUNK_BYTES,
    )


# ---------------------------------------------------------------- what a turn costs at least


def first_piece(reply: str) -> tuple[str, int]:
    """The first speakable piece of `reply` streamed as the fake's word tokens, and how many
    tokens the language model must have written before the session can cut it off."""
    tokens = words(reply)
    splitter = SentenceSplitter()
    for count, token in enumerate(tokens, start=1):
        pieces = splitter.feed(token)
        if pieces:
            return pieces[0], count
    rest = splitter.flush()
    return (rest[0] if rest else ""), len(tokens)


def transcription_s(profile: LatencyProfile, audio_s: float) -> float:
    """A completed recording of `audio_s` seconds, transcribed."""
    return profile.stt_base_s + profile.stt_per_audio_s * audio_s


def pipelined_stages(
    profile: LatencyProfile, audio_s: float, reply: str, *, live: bool
) -> dict[str, float]:
    """The providers' part of the pipelined design, stage by stage (seconds, in order)."""
    _, tokens = first_piece(reply)
    return {
        "stt": profile.live_final_s if live else transcription_s(profile, audio_s),
        # The first token, then one interval per further token up to the piece's end.
        "llm_first_piece": profile.llm_first_token_s
        + max(0, tokens - 1) * profile.llm_token_interval_s,
        "tts_first_audio": profile.tts_first_audio_s,
    }


def critical_path_s(
    profile: LatencyProfile, audio_s: float, reply_text: str = REPLY, live: bool = False
) -> float:
    """End of the user's audio to the first reply audio, providers only, pipelined: the final
    transcript (live, or of the completed recording), the language model's first token and
    the tokens up to the first speakable piece, and that piece's first speech audio. A turn's
    voice-to-voice time minus this is the server's overhead."""
    return sum(pipelined_stages(profile, audio_s, reply_text, live=live).values())


def sequential_stages(profile: LatencyProfile, audio_s: float, reply: str) -> dict[str, float]:
    """The providers' part of the sequential design, stage by stage (seconds, in order): the
    completed recording, the whole reply (non-streaming), the speech's first audio, the rest
    of the speech file."""
    chunks = math.ceil(len(speech_pcm(reply)) / SPEECH_CHUNK_BYTES)
    return {
        "stt": transcription_s(profile, audio_s),
        # The fake answers a non-streaming completion after the first token's delay plus one
        # interval per token.
        "llm": profile.llm_first_token_s + len(words(reply)) * profile.llm_token_interval_s,
        "tts_first_audio": profile.tts_first_audio_s,
        "tts_rest": max(0, chunks - 1) * profile.tts_chunk_interval_s,
    }


def sequential_s(
    profile: LatencyProfile, audio_s: float, reply_text: str = REPLY, *, whole_file: bool = False
) -> float:
    """End of the user's audio to the first reply audio in the sequential design, providers
    only: at the speech's first bytes, or with `whole_file` once the whole file is in."""
    stages = sequential_stages(profile, audio_s, reply_text)
    if not whole_file:
        stages.pop("tts_rest")
    return sum(stages.values())
