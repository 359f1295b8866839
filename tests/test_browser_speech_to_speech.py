"""The page's speech-to-speech switch in a real browser: headless Chromium on `voice-fsm serve`,
whose speech-to-speech mode runs on the fake Realtime conversation server (the cascade's stages
are the fakes). The page offers the switch only where the server runs the mode; switching it on
sends session.update, and a spoken turn then goes recording → thinking → speaking with the
model's transcripts and audio.

Chromium or Playwright missing: the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voice_fsm.testing.fake_realtime_conversation import (
    FakeConversationConfig,
    running_fake_conversation,
)

from conftest import NewPage
from support.browser import KEY, is_subsequence, serving, tone_pcm, write_wav
from support.servers import clean_env

pytestmark = [pytest.mark.browser, pytest.mark.integration]

QUESTION = "What is the capital of France?"
REPLY = "The capital of France is Paris."
FAKES = {f"VOICE_FSM_{stage}__PROVIDER": "fake" for stage in ("STT", "LLM", "TTS")}
S2S_STATES = ["recording", "thinking", "speaking", "idle"]


@pytest.fixture
def upstream() -> Iterator[tuple[FakeConversationConfig, str]]:
    config = FakeConversationConfig(api_key=KEY, transcript=QUESTION, reply=REPLY)
    with running_fake_conversation(config) as base_url:
        yield config, base_url


def test_the_page_switches_to_speech_to_speech_and_a_turn_is_answered(
    new_page: NewPage, tmp_path: Path, upstream: tuple[FakeConversationConfig, str]
) -> None:
    fake, base_url = upstream
    env = clean_env(
        **FAKES, VOICE_FSM_VAD__PROVIDER="off", VOICE_FSM_S2S__BASE_URL=base_url,
        VOICE_FSM_S2S__API_KEY=KEY,
    )  # fmt: skip
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.5))
    with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
        bp.wait_connected()
        (created,) = bp.received("session.created")
        assert created["pipelines"] == ["cascade", "speech-to-speech"]
        assert bp.page.is_visible("#s2s-label")
        assert not bp.page.is_checked("#s2s")
        assert "speech-to-speech" not in bp.page.inner_text("#engines")

        bp.page.click("#s2s-label")
        (update,) = bp.sent("session.update")
        assert update["session"] == {"pipeline": "speech-to-speech"}
        (updated,) = bp.received("session.updated")
        assert updated["session"]["pipeline"] == "speech-to-speech"
        bp.wait_for(
            "document.querySelector('#engines').innerText.includes('gpt-realtime-2.1-mini')",
            "the header names the Realtime model",
        )
        assert bp.page.is_checked("#s2s")
        before = len(bp.hook("stateHistory"))

        bp.hold_talk(0.8)
        bp.wait_for(
            "voiceFsm.state === 'idle' && voiceFsm.lastMetrics !== null"
            " && voiceFsm.lastMetrics.turn === 1"
            " && voiceFsm.playedSamples === voiceFsm.scheduledSamples"
            " && voiceFsm.scheduledSamples > 0",
            "the turn is over and its audio played",
            timeout=15,
        )
        history = bp.hook("stateHistory")[before:]
        assert is_subsequence(S2S_STATES, history), history
        assert "transcribing" not in history, history
        (heard,) = bp.received("transcript.done", turn=1)
        assert heard["text"] == QUESTION
        (done,) = bp.received("response.done", turn=1)
        assert done["text"] == REPLY
        assert bp.page.locator("#reply").inner_text().strip() == REPLY
        assert not bp.sockets.events("error")
        # The page's audio went to the Realtime model, once.
        assert len(fake.connections) == 1
        assert fake.connections[0].query == {"model": "gpt-realtime-2.1-mini"}

        bp.page.click("#s2s-label")  # back to the cascade
        (_, back) = bp.sent("session.update", count=2)
        assert back["session"] == {"pipeline": "cascade"}
        bp.finish()
    assert "Traceback" not in server.log.read_text(errors="replace"), server.output()


def test_the_switch_is_not_offered_where_the_server_cannot_run_the_mode(
    new_page: NewPage, tmp_path: Path
) -> None:
    env = clean_env(**FAKES, VOICE_FSM_VAD__PROVIDER="off", VOICE_FSM_S2S__PROVIDER="off")
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.0))
    with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
        bp.wait_connected()
        (created,) = bp.received("session.created")
        assert created["pipelines"] == ["cascade"]
        assert not bp.page.is_visible("#s2s-label")
        assert not bp.sockets.messages("session.update")
        bp.finish()
