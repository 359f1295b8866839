"""Whisper on a window cut to the utterance instead of its fixed 30 s.

faster-whisper pads every input to 30 s of features, and the encoder's cost grows with the
window: for a 2 s question most of the time goes to encoding silence. CTranslate2 accepts
shorter windows (its Whisper encoder takes any even number of frames up to 3000), so a spoken
turn is encoded on its own length plus a little silence.

Three things go wrong on a short window, and all are handled here:
- without timestamps the decoder rarely ends the text: it starts the utterance again ("What is
  the capital of France? What is the capital of"). With timestamps it marks where each segment
  ends, so segments that start where the audio has ended are dropped;
- a window of a second or two is too short for the model to settle: the window is at least
  `MIN_WINDOW_S` long;
- silence comes out as words in some language: faster-whisper's no-speech rule drops them.
The longest text a window may hold is bounded by its length, so a decoder that goes on talking
costs a few tokens, not 448.

Measured on this project's question set (27 questions spoken by Piper) and 10 human recordings
(pocketsphinx-testdata), 2 CPU threads, median per utterance: Whisper base on these windows
0.38 s with word error rates of 1.6 % and 6.5 %, against 2.1 s (3.6 %, 4.3 %) on 30 s windows;
tiny.en 0.98 s (3.6 %, 8.7 %) on 30 s windows, and 0.24 s on short ones but starting the
utterance over (12.5 %, 16.3 %), so tiny keeps 30 s windows. Padding less than 1.5 s cost
accuracy on the human recordings (12 % with 1 s).
"""

from __future__ import annotations

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

SAMPLE_RATE = 16_000
FRAMES_PER_SECOND = 100  # Whisper's features: one frame per 10 ms
MAX_WINDOW_FRAMES = 3000  # the model's own window: 30 s
PAD_S = 1.5
"""Silence after the utterance: room for the model to mark the end of the last segment."""
MIN_WINDOW_S = 3.0
LONGEST_S = 28.0
"""Longer audio (with its padding it would not fit one window) takes faster-whisper's path."""
TOKENS_PER_S = 8
"""Text and timestamp tokens per second of speech, with room: speech is 2 to 4 words a second."""
TOKENS_EXTRA = 12
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
SEGMENT_END_SLACK_S = 0.1
"""A segment starting this close to the end of the audio, or after it, is the model going on
about the silence after the speech."""


def fits_window(samples: np.ndarray) -> bool:
    return len(samples) <= LONGEST_S * SAMPLE_RATE


def window_features(model: WhisperModel, samples: np.ndarray) -> np.ndarray:
    """Log-mel features of `samples` and the padding after them, as [1, mels, frames]."""
    length = max(len(samples) + int(PAD_S * SAMPLE_RATE), int(MIN_WINDOW_S * SAMPLE_RATE))
    padded = np.zeros(length, dtype=np.float32)
    padded[: len(samples)] = samples
    features = model.feature_extractor(padded, padding=0)
    frames = min(MAX_WINDOW_FRAMES, features.shape[-1] - features.shape[-1] % 2)
    return np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)


def max_tokens(samples: np.ndarray) -> int:
    return min(224, int(len(samples) / SAMPLE_RATE * TOKENS_PER_S) + TOKENS_EXTRA)


def transcribe_window(
    model: WhisperModel, samples: np.ndarray, language: str | None, beam_size: int = 1
) -> list[str]:
    """The text of each segment spoken in `samples` (float32, 16 kHz, at most `LONGEST_S`);
    `language` None: detected from the same window (multilingual models)."""
    features = ctranslate2.StorageView.from_array(window_features(model, samples))
    encoded = model.model.encode(features, to_cpu=False)
    if language is None:
        language = "en"
        if model.model.is_multilingual:
            best = model.model.detect_language(encoded)[0][0][0]  # like "<|de|>"
            language = best.strip("<|>")
    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )
    result = model.model.generate(
        encoded,
        [list(tokenizer.sot_sequence)],  # no <|notimestamps|>: the segments' ends are wanted
        beam_size=beam_size,
        max_length=max_tokens(samples),
        suppress_blank=True,
        return_scores=True,
        return_no_speech_prob=True,
    )[0]
    tokens = result.sequences_ids[0]
    if is_no_speech(result.no_speech_prob, result.scores[0], len(tokens)):
        return []
    return segment_texts(tokenizer, tokens, len(samples) / SAMPLE_RATE)


def is_no_speech(no_speech_prob: float, score: float, length: int) -> bool:
    """faster-whisper's rule (and openai-whisper's): the model thinks there is no speech and
    is unsure of the text it made up. Silence or noise otherwise comes out as words in some
    language ("Yn ymwch" for 0.3 s of silence)."""
    average_logprob = score * length / (length + 1)  # the score is divided by the length
    return no_speech_prob > NO_SPEECH_THRESHOLD and average_logprob < LOGPROB_THRESHOLD


def segment_texts(tokenizer: Tokenizer, tokens: list[int], audio_s: float) -> list[str]:
    """The decoded text of each segment `<|start|> text <|end|>` that starts inside the audio;
    a last segment without its end (the token budget ran out) counts if it started in time."""
    texts: list[str] = []
    words: list[int] = []
    started = False
    for token in tokens:
        if token >= tokenizer.timestamp_begin:
            seconds = (token - tokenizer.timestamp_begin) * 0.02
            if not started:
                if seconds >= audio_s - SEGMENT_END_SLACK_S:
                    break
                started = True
            else:
                texts.append(tokenizer.decode(words))
                words, started = [], False
        elif token < tokenizer.eot:
            words.append(token)
        else:
            break
    if started and words:
        texts.append(tokenizer.decode(words))
    return without_restarts([text for text in texts if text.strip()])


def without_restarts(texts: list[str]) -> list[str]:
    """`texts` up to the first segment that starts the utterance over (the same first two
    words or more as the first segment's): a small model's way of filling the silence."""
    if not texts:
        return texts
    first = _words(texts[0])
    for n, text in enumerate(texts[1:], start=1):
        words = _words(text)
        shared = min(len(words), len(first))
        if shared >= 2 and words[:shared] == first[:shared]:
            return texts[:n]
    return texts


def _words(text: str) -> list[str]:
    return ["".join(c for c in word.lower() if c.isalnum()) for word in text.split()]
