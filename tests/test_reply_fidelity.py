"""What was spoken, not what was written: a speech provider that answered or paraphrased
instead of reading leaves its own words in the history and in `response.done`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from voice_fsm.adapters.base import ChatMessage, ReportsSpokenText
from voice_fsm.adapters.fake import FakeLanguageModel, FakeTextToSpeech
from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.adapters.openai.realtime_tts import OpenAIRealtimeTextToSpeech
from voice_fsm.events import InputAudioStart, InputAudioStop, ResponseDone
from voice_fsm.reply import speak_while_writing
from voice_fsm.testing.fake_openai import FakeOpenAIConfig
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig
from voice_fsm.turn import Turn

from conftest import ClientFactory
from session_harness import Client, fake_pipeline, make_settings
from support.openai_wire import openai_settings

KEY = "sk-proj-fidelity0123456789abcdef"
WRITTEN = "The capital of France is Paris."
PARAPHRASE = "Oh, that one is easy: it is Paris, of course, the city of light."
START = InputAudioStart(type="input_audio.start")
STOP = InputAudioStop(type="input_audio.stop")


# ---------------------------------------------------------------- a session on the fakes


@pytest.fixture
def paraphrasing(realtime_server: tuple[FakeRealtimeConfig, str]) -> FakeRealtimeConfig:
    fake = realtime_server[0]
    fake.reset(api_key=KEY, tts_first_audio_delay=0.0, tts_chunk_delay=0.0)
    fake.paraphrase = lambda text: PARAPHRASE if text == WRITTEN else text
    return fake


@pytest.fixture
async def realtime_tts(
    realtime_server: tuple[FakeRealtimeConfig, str], paraphrasing: FakeRealtimeConfig
) -> AsyncIterator[OpenAIRealtimeTextToSpeech]:
    settings = openai_settings("tts", base_url=realtime_server[1], key=KEY, timeout=2.0)
    tts = OpenAIRealtimeTextToSpeech(
        settings.tts, make_openai_client(settings, settings.tts), settings.secrets()
    )
    yield tts
    await tts.aclose()


@pytest.fixture
async def openai_llm(
    fake_openai: tuple[FakeOpenAIConfig, str],
) -> AsyncIterator[OpenAILanguageModel]:
    config, base_url = fake_openai
    config.reply = WRITTEN
    settings = openai_settings("llm", base_url=base_url)
    llm = OpenAILanguageModel(settings.llm, make_openai_client(settings, settings.llm))
    yield llm
    await llm.aclose()


async def turn(client: Client) -> ResponseDone:
    """One push-to-talk turn to its end: its `response.done`."""
    await client.send(START)
    await client.until("state", state="recording")
    await client.speak()
    await client.send(STOP)
    items = await client.until("turn.metrics")
    [done] = [item.event for item in items if isinstance(item.event, ResponseDone)]
    return done


async def test_the_next_turn_hears_the_paraphrase_not_the_written_reply(
    connect: ClientFactory,
    fake_openai: tuple[FakeOpenAIConfig, str],
    openai_llm: OpenAILanguageModel,
    realtime_tts: OpenAIRealtimeTextToSpeech,
    paraphrasing: FakeRealtimeConfig,
) -> None:
    client = await connect(fake_pipeline(llm=openai_llm, tts=realtime_tts), make_settings())
    first = await turn(client)
    # The speech model was asked for the written reply and said something else.
    [asked] = paraphrasing.received("response.create")
    assert asked["response"]["input"][0]["content"][0]["text"] == WRITTEN
    assert first.text == PARAPHRASE
    assert not first.interrupted

    await turn(client)
    chats = fake_openai[0].received("chat")
    assert len(chats) == 2
    assert chats[1].json is not None
    history = [(m["role"], m["content"]) for m in chats[1].json["messages"][1:]]
    assert history == [
        ("user", "What is the capital of France?"),
        ("assistant", PARAPHRASE),
        ("user", "What is the capital of France?"),
    ]


async def test_a_faithful_reading_keeps_the_written_reply(
    connect: ClientFactory,
    fake_openai: tuple[FakeOpenAIConfig, str],
    openai_llm: OpenAILanguageModel,
    realtime_tts: OpenAIRealtimeTextToSpeech,
    paraphrasing: FakeRealtimeConfig,
) -> None:
    paraphrasing.paraphrase = lambda text: text.upper().replace(".", "")  # same words
    client = await connect(fake_pipeline(llm=openai_llm, tts=realtime_tts), make_settings())
    assert (await turn(client)).text == WRITTEN
    await turn(client)
    assert fake_openai[0].received("chat")[1].json is not None
    messages = fake_openai[0].received("chat")[1].json["messages"]  # type: ignore[index]
    assert ("assistant", WRITTEN) in [(m["role"], m["content"]) for m in messages]


# ---------------------------------------------------------------- the reply, piece by piece

REPLY = "**Paris** is the capital. It sits on the Seine. About two million people live there."
SAID_INSTEAD = "Rivers are lovely, are they not?"


class SaysOtherwise(FakeTextToSpeech):
    """Speaks the fake's tone for what it says, and says `instead[piece]` for some pieces,
    reporting it as a Realtime model's transcript would."""

    def __init__(self, instead: dict[str, str], **options: Any) -> None:
        super().__init__(**options)
        self.instead = instead

    async def synthesize_reporting(
        self, text: str, *, voice: str | None = None, spoken_instead: Callable[[str], None]
    ) -> AsyncIterator[bytes]:
        said = self.instead.get(text, text)
        async for chunk in self.synthesize(said, voice=voice):
            yield chunk
        if said != text:
            spoken_instead(said)


async def speak_reply(tts: FakeTextToSpeech) -> Turn:
    turn = Turn(1)

    async def send(_: object) -> None:
        pass

    async def send_audio(frame: bytes) -> None:
        turn.audio_sent += len(frame)
        turn.spoken.add_audio(len(frame))

    await speak_while_writing(
        turn,
        FakeLanguageModel(REPLY),
        tts,
        [ChatMessage("user", "Tell me about Paris.")],
        voice=None,
        send=send,
        send_audio=send_audio,
    )
    return turn


async def test_a_piece_said_otherwise_becomes_the_reply_and_what_was_heard() -> None:
    tts = SaysOtherwise({"It sits on the Seine.": SAID_INSTEAD})
    assert isinstance(tts, ReportsSpokenText)
    turn = await speak_reply(tts)
    assert [text for text, _ in tts.ledger.calls] == [
        "Paris is the capital.",
        SAID_INSTEAD,
        "About two million people live there.",
    ]
    last = "About two million people live there."
    assert turn.reply == f"Paris is the capital. {SAID_INSTEAD} {last}"
    # A barge-in during the third piece: what was heard holds the words actually spoken.
    (_, first), (_, second), _ = turn.spoken.pieces
    assert second == len(tts.audio_for(SAID_INSTEAD))
    assert turn.spoken.heard(first + second + 2) == f"Paris is the capital. {SAID_INSTEAD}"
    heard_half = turn.spoken.heard(first + second // 2)
    assert heard_half == "Paris is the capital. Rivers are lovely, …"


async def test_a_reply_read_as_written_keeps_its_text_as_written() -> None:
    turn = await speak_reply(SaysOtherwise({}))
    assert turn.reply == REPLY  # its markdown too: only a divergence rewrites it
    assert not turn.spoken.diverged


async def test_a_filler_said_otherwise_stays_out_of_the_reply() -> None:
    turn = Turn(1)
    turn.spoken.start_piece("One moment.", filler=True)
    turn.spoken.spoken_instead("Hold on, let me think about the weather.")
    turn.spoken.start_piece("It is sunny.")
    assert not turn.spoken.diverged
    assert turn.spoken.text() == "It is sunny."
