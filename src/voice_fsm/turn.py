"""One user turn: the audio, the text and the timings it gathers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.audio import bytes_for_ms, duration_ms
from voice_fsm.events import AudioDone, ToolTiming, TurnMetrics
from voice_fsm.speech_pieces import SpokenReply

if TYPE_CHECKING:
    from voice_fsm.live import LiveTurn
from voice_fsm.timing import Stopwatch
from voice_fsm.turn_audio import TurnAudio

SPEECH_END_PAD_MS = 200
"""Audio kept after the detector's end of speech when a hands-free turn's recording is sent
for transcription (`Turn.speech_ended`). The embedded detector marks the end at the first
32 ms window whose speech probability falls below its lower threshold, and a word's unvoiced
ending (the release of a final t or k, the tail of an s or f) often scores low before it is
over: 200 ms keeps those, and a model that hears a word cut off guesses it. More costs time:
transcription is paid by the second of audio, about 0.6 s of waiting per second uploaded on
the benchmark's profile, so the 500 ms window would cost 0.3 s; 200 ms of it costs 0.12 s."""


class Turn:
    """What one user turn has gathered so far."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.audio = TurnAudio()
        self.transcript = ""
        self.reply = ""
        self.audio_sent = 0
        self.audio_announced = False
        """The client has had this turn's `audio.start`."""
        self.tool_timings: list[ToolTiming] = []
        self.tool_steps: list[ChatMessage] = []
        """The tool calls that finished and their results, as the history keeps them."""
        self.spoken = SpokenReply()
        self.live: LiveTurn | None = None
        self.clock = Stopwatch()
        self.outcome: str | None = None
        self.provider_requests: list[dict[str, str]] = []
        """The providers' ids of the requests made for this turn (`provider_requests`)."""
        self.audio_refused = False
        """It ended with audio-too-long: the rest of its audio, and its stop, are dropped
        without an error (the client is still sending them)."""
        self.stray_audio_reported = False
        """Audio came after it ended, outside any turn, and the client was told once."""
        self.speak = True
        """Its reply is spoken; else it is text only."""
        self.reply_wanted = False
        """The client asked for a reply while it was transcribed (`ReplyCreate`)."""
        self.awaiting_reply = False
        """Transcribed, and waiting for the client to ask for a reply (`ReplyPolicy.auto`
        off): the machine is idle, the turn not ended."""
        self.instructions: str | None = None
        """Its reply's own instructions (else the session's)."""
        self.out_of_band = False
        """Its reply is not kept in the history (a Realtime `conversation: "none"` response)."""
        self.user_item: str | None = None
        self.reply_item: str | None = None
        """The ids a front end gave the turn's user message and reply: the history keeps
        them under these (`conversation.py`)."""

    def speech_ended(self, silence_ms: int) -> None:
        """Hands-free: the recording ends with `silence_ms` heard after the end of speech (the
        detector's window): a completed-recording transcription gets the speech and
        `SPEECH_END_PAD_MS` of it. Push-to-talk recordings are sent whole."""
        self.audio.leave_out_end(silence_ms - SPEECH_END_PAD_MS)

    @property
    def audio_in_ms(self) -> int:
        return duration_ms(len(self.audio))

    def release_audio(self) -> None:
        """Let the turn's audio go once the turn has ended; its length is still reported."""
        self.audio.release()

    def played_bytes(self, played_ms: int | None) -> int:
        """How much of the reply's audio the user heard: what the client says it played, or
        (when it does not say) what real-time playback from the first frame would have played."""
        if played_ms is None:
            played_ms = self.clock.ms_since("first_audio_sent") or 0
        return min(bytes_for_ms(played_ms), self.audio_sent)

    def metrics(self) -> TurnMetrics:
        ms = self.clock.ms
        return TurnMetrics(
            turn=self.number,
            audio_in_ms=self.audio_in_ms,
            stt_ms=ms("stt.start", "stt.end"),
            llm_first_token_ms=ms("llm.start", "llm.first_token"),
            llm_ms=ms("llm.start", "llm.end"),
            tts_first_audio_ms=ms("tts.start", "tts.first_audio"),
            tts_ms=ms("tts.start", "tts.end"),
            # From the end of the user's audio to the first reply audio byte sent.
            voice_to_voice_ms=ms("stop", "first_audio_sent"),
            tools=list(self.tool_timings),
        )

    def audio_done(self) -> AudioDone:
        return AudioDone(
            turn=self.number, bytes=self.audio_sent, duration_ms=duration_ms(self.audio_sent)
        )
