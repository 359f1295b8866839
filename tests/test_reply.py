"""The reply spoken while it is written: pieces, order, frames, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voice_fsm.adapters.base import ChatMessage
from voice_fsm.adapters.fake import FakeLanguageModel, FakeTextToSpeech
from voice_fsm.errors import ErrorCode, ProviderError, Stage
from voice_fsm.events import ResponseDelta, ServerEvent
from voice_fsm.reply import MAX_AUDIO_FRAME, speak_while_writing
from voice_fsm.turn import Turn

REPLY = "Paris is the capital. It sits on the Seine. About two million people live there."
MESSAGES = [ChatMessage("user", "Tell me about Paris.")]


class OddChunks(FakeTextToSpeech):
    """Speaks like the fake, in chunks of odd lengths, as a provider may."""

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        self.ledger.calls.append((text, voice))
        pcm, offset = self.audio_for(text), 0
        for size in (1, 4801, 3, 9999):
            yield pcm[offset : offset + size]
            offset += size
        yield pcm[offset:]


async def run(
    llm: FakeLanguageModel, tts: FakeTextToSpeech
) -> tuple[Turn, list[ServerEvent], list[bytes]]:
    turn, events, frames = Turn(1), [], []

    async def send(event: ServerEvent) -> None:
        events.append(event)

    async def send_audio(frame: bytes) -> None:
        frames.append(frame)
        turn.audio_sent += len(frame)

    await speak_while_writing(
        turn, llm, tts, MESSAGES, voice="marin", send=send, send_audio=send_audio
    )
    return turn, events, frames


async def test_each_sentence_is_spoken_in_order_in_whole_samples() -> None:
    tts = OddChunks()
    turn, events, frames = await run(FakeLanguageModel(REPLY), tts)
    assert turn.reply == REPLY
    assert "".join(e.text for e in events if isinstance(e, ResponseDelta)) == REPLY
    spoken = [text for text, _ in tts.ledger.calls]
    assert spoken == [
        "Paris is the capital.",
        "It sits on the Seine.",
        "About two million people live there.",
    ]
    assert all(voice == "marin" for _, voice in tts.ledger.calls)
    assert b"".join(frames) == b"".join(tts.audio_for(text) for text in spoken)
    assert all(len(frame) % 2 == 0 and 0 < len(frame) <= MAX_AUDIO_FRAME for frame in frames)


async def test_the_first_sentence_is_spoken_before_the_model_finishes() -> None:
    tts = FakeTextToSpeech()
    llm = FakeLanguageModel(REPLY, token_delay=0.02)
    spoken_while_writing: list[bool] = []

    class Watching(FakeTextToSpeech):
        async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
            spoken_while_writing.append(llm.ledger.open > 0)
            async for chunk in tts.synthesize(text, voice=voice):
                yield chunk

    await run(llm, Watching())
    assert spoken_while_writing[0] is True


async def test_a_failing_model_is_the_error_and_stops_the_speech() -> None:
    err = ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, "llm down", stage=Stage.LLM)
    tts = FakeTextToSpeech(chunk_delay=0.05)
    with pytest.raises(ProviderError) as raised:
        await run(FakeLanguageModel(REPLY, fail=err, fail_after_tokens=6), tts)
    assert raised.value is err
    assert tts.ledger.open == 0


async def test_an_empty_reply_is_a_provider_error() -> None:
    with pytest.raises(ProviderError) as raised:
        await run(FakeLanguageModel("   "), FakeTextToSpeech())
    assert raised.value.stage == Stage.LLM
    assert "empty reply" in raised.value.message


class RunsPiecesOn(FakeTextToSpeech):
    """A voice that says pieces without a pause between them, as Piper does."""

    short_first_piece = True


async def test_a_voice_that_runs_pieces_on_starts_on_the_first_phrase() -> None:
    # Speech starts sooner when the first piece need not wait for the sentence's end; a voice
    # that pauses after each piece keeps whole sentences, so its prosody is not broken.
    long_first = "The capital of France is Paris, which sits on the Seine. It is old."
    for tts, first in (
        (RunsPiecesOn(), "The capital of France"),
        (FakeTextToSpeech(), "The capital of France is Paris,"),
    ):
        await run(FakeLanguageModel(long_first), tts)
        spoken = [text for text, _voice in tts.ledger.calls]
        assert spoken[0] == first, spoken
        assert " ".join(spoken) == long_first
