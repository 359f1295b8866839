"""End to end with the embedded offline engines: real speech in, real speech out, no key.

`voice-fsm serve` runs as a user would start it, with no OPENAI_API_KEY, so every stage is
local. A question spoken by Piper goes in over the WebSocket; the reply's audio is then
transcribed by the same speech-to-text, and must give back words of the reply text.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest

from voice_fsm.audio import SAMPLE_RATE
from voice_fsm.talk import TalkResult, talk

from support.local import require_local_engines
from support.servers import clean_env, console_script, free_port, running_server

pytestmark = pytest.mark.integration

QUESTION = "In one full sentence, what is the capital of France?"


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_local_engines()
    workdir = tmp_path_factory.mktemp("local-server")
    port = free_port()
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=clean_env(),
        cwd=workdir,
        log=workdir / "server.log",
        timeout=120,
    ):
        yield f"ws://127.0.0.1:{port}/ws"


@pytest.fixture(scope="module")
def turn(server_url: str) -> TalkResult:
    from voice_fsm.testing.speech import spoken

    question = spoken(QUESTION, total_s=2.0)
    return asyncio.run(talk(server_url, question, realtime=False, time_limit=60))


def test_the_session_reports_local_engines(turn: TalkResult) -> None:
    created = turn.session
    assert (created.stt.provider, created.llm.provider, created.tts.provider) == ("local",) * 3
    assert created.stt.model == "whisper-base"


def test_a_spoken_question_gets_a_spoken_answer(turn: TalkResult) -> None:
    assert turn.ok, turn.error
    assert {"capital", "france"} <= words(turn.transcript)
    assert turn.reply.strip()
    reply_seconds = len(turn.audio) / 2 / SAMPLE_RATE
    assert reply_seconds >= 0.5
    assert turn.metrics is not None
    assert turn.metrics.voice_to_voice_ms is not None


def test_the_reply_audio_says_the_reply_text(turn: TalkResult) -> None:
    from voice_fsm.adapters.base import TranscriptDone
    from voice_fsm.adapters.local.stt import WhisperSpeechToText
    from voice_fsm.settings import LocalSettings

    async def transcribe() -> str:
        stt = WhisperSpeechToText(LocalSettings())
        done = [e async for e in stt.transcribe(turn.audio) if isinstance(e, TranscriptDone)]
        return done[-1].text

    heard = asyncio.run(transcribe())
    expected = words(turn.reply) - {"a", "the", "of", "is", "and", "to", "in"}
    assert expected, turn.reply
    overlap = expected & words(heard)
    # Piper and Whisper are not perfect, but most words of the reply must come back.
    assert len(overlap) >= max(1, len(expected) // 2), (turn.reply, heard)


def tool_turn(server_url: str, question: str) -> TalkResult:
    from voice_fsm.testing.speech import spoken

    pcm = spoken(question, total_s=2.5)
    return asyncio.run(talk(server_url, pcm, realtime=False, time_limit=90))


def test_the_built_in_calculator_answers_a_spoken_sum(server_url: str) -> None:
    """The embedded model calls the calculator (on by default with it), and says its result."""
    result = tool_turn(server_url, "What is 17 times 23?")
    assert result.ok, result.error
    calls = [event for event in result.events if event.type == "tool.call"]
    outcomes = [event for event in result.events if event.type == "tool.result"]
    assert [call.name for call in calls] == ["calculator"], (result.transcript, calls)
    assert [json.loads(o.output)["result"] for o in outcomes] == [391], outcomes
    assert "391" in result.reply.replace(",", ""), result.reply
    assert result.metrics is not None
    assert [tool.name for tool in result.metrics.tools] == ["calculator"]


def test_the_built_in_clock_answers_the_day_of_the_week(server_url: str) -> None:
    import datetime

    result = tool_turn(server_url, "What day of the week is it today?")
    assert result.ok, result.error
    calls = [event for event in result.events if event.type == "tool.call"]
    assert [call.name for call in calls] == ["clock"], (result.transcript, calls)
    today = datetime.datetime.now().astimezone().strftime("%A")
    assert today.lower() in result.reply.lower(), (today, result.reply)
