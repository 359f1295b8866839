"""The page in a real browser: headless Chromium talks to `voice-fsm serve` like a user would.

Chromium's microphone is a WAV file (`--use-file-for-fake-audio-capture`), so each test
launches its own browser. Each test asserts what the page showed (the DOM and
`window.voiceFsm`), what went over its WebSocket (Playwright's frame events), that the page
logged no errors, and saves a screenshot of its final look to artifacts/browser/.

Chromium or Playwright missing: the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice_fsm.testing import running_fake_openai

from conftest import NewPage
from support.browser import (
    BrowserPage,
    Server,
    is_subsequence,
    openai_env,
    quick_fake,
    serving,
    tone_pcm,
    use_local_engines,
    wav_seconds,
    write_wav,
)
from support.servers import clean_env, free_port, stop_process

pytestmark = [pytest.mark.browser, pytest.mark.integration]

QUESTION = "What is the capital of France?"
TURN_STATES = ["idle", "recording", "transcribing", "thinking", "speaking", "idle"]
BYTES_PER_SECOND = 24_000 * 2  # PCM16 mono at 24 kHz, both ways
# Chromium logs a refused connection as a console error: the page's token request
# (POST /v1/page_token, before each attempt) or its WebSocket. Only the reconnect test, which
# stops the server on purpose, tolerates it.
REFUSED_SOCKET = (
    r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws' failed"
    r"|Failed to load resource: net::ERR_CONNECTION_REFUSED"
)

# A page is done with a turn `arg` when it is idle and has played all the audio the server
# sent, or when the turn failed (`lastError` keeps the last error of the session: check its turn).
TURN_FAILED = "(voiceFsm.lastError !== null && voiceFsm.lastError.turn === arg)"
TURN_OVER = f"""
    {TURN_FAILED}
    || (voiceFsm.state === 'idle' && voiceFsm.lastMetrics !== null
        && voiceFsm.lastMetrics.turn === arg
        && voiceFsm.playedSamples === voiceFsm.scheduledSamples && voiceFsm.scheduledSamples > 0)
"""

# ---------------------------------------------------------------- shared checks


def wait_turn(bp: BrowserPage, turn: int, *, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until turn `turn` is over and played to the end; fail on an error. Its metrics."""
    bp.wait_for(TURN_OVER, f"turn {turn} is over and its audio played", arg=turn, timeout=timeout)
    error = bp.hook("lastError")
    assert error is None or error["turn"] != turn, f"turn {turn} failed: {error}\n{bp.describe()}"
    # Every frame of the turn is in the socket log too once its turn.metrics is.
    (event,) = bp.received("turn.metrics", turn=turn)
    metrics: dict[str, Any] = bp.hook("lastMetrics")
    assert metrics == event, (metrics, event)
    return metrics


def waterfall(bp: BrowserPage) -> dict[str, dict[str, float]]:
    """The bars of #metrics by data-stage: their data-ms and drawn width."""
    bars: list[dict[str, Any]] = bp.page.eval_on_selector_all(
        "#metrics .bar",
        """(bars) => bars.map((bar) => ({stage: bar.dataset.stage, ms: Number(bar.dataset.ms),
                                          width: bar.getBoundingClientRect().width}))""",
    )
    return {bar["stage"]: {"ms": bar["ms"], "width": bar["width"]} for bar in bars}


def assert_waterfall(bp: BrowserPage, metrics: dict[str, Any]) -> None:
    bars = waterfall(bp)
    stages = {"stt", "llm_first_token", "tts_first_audio", "voice_to_voice"}
    assert len(bars) >= 4, f"#metrics .bar: {bars}"
    assert stages <= bars.keys(), f"#metrics .bar: {bars}"
    for stage in stages:
        assert abs(bars[stage]["ms"] - metrics[f"{stage}_ms"]) <= 1, (stage, bars, metrics)
    for stage in ("stt", "voice_to_voice"):
        assert bars[stage]["width"] > 0, f"the {stage} bar is not drawn: {bars}"


def assert_error_shown(bp: BrowserPage, code: str) -> str:
    error = bp.page.locator("#error")
    assert error.is_visible(), f"#error is hidden\n{bp.describe()}"
    assert error.get_attribute("data-code") == code
    return error.inner_text()


def assert_no_error_shown(bp: BrowserPage) -> None:
    error = bp.page.locator("#error")
    assert not error.is_visible() or not error.inner_text().strip(), error.inner_text()


def text_of(bp: BrowserPage, selector: str) -> str:
    return bp.page.locator(selector).inner_text().strip()


def samples_of(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64) / 32768


def rms(pcm: bytes) -> float:
    samples = samples_of(pcm)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def similarity(recorded: bytes, original: bytes) -> float:
    """The peak of the normalised cross-correlation of two recordings (1.0: the same signal)."""
    a, b = samples_of(recorded), samples_of(original)
    size = 1 << (len(a) + len(b) - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    return float(np.max(np.abs(correlation)) / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))


def server_log_is_clean(server: Server) -> None:
    assert "Traceback" not in server.log.read_text(errors="replace"), server.output()


# ---------------------------------------------------------------- tests


def test_push_to_talk_turn(new_page: NewPage, tmp_path: Path) -> None:
    """One whole turn: the mic file goes in, the DOM shows every state, the reply is played."""
    if use_local_engines():
        from voice_fsm.testing.speech import spoken

        question, env, local = spoken(QUESTION, total_s=2.0), clean_env(), True
    else:
        fake = {f"VOICE_FSM_{stage}__PROVIDER": "fake" for stage in ("STT", "LLM", "TTS")}
        question, env, local = tone_pcm(2.0), clean_env(**fake), False
    wav = write_wav(tmp_path / "question.wav", question)

    with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
        bp.wait_connected()
        bp.require_hooks()
        (created,) = bp.received("session.created")
        expected = "local" if local else "fake"
        assert created["stt"]["provider"] == created["llm"]["provider"] == expected

        before = len(bp.hook("stateHistory"))
        held = bp.hold_talk(wav_seconds(wav) + 0.4)
        metrics = wait_turn(bp, 1, timeout=30 if local else 10)
        hooks = bp.hooks()

        # The DOM went through every state of a turn, in order, from the press on.
        history = hooks["stateHistory"]
        assert history[before - 1] == "idle", history
        assert is_subsequence(TURN_STATES[1:], history[before:]), history
        assert history[-1] == "idle", history
        assert text_of(bp, "#state") == "idle"

        # What the user said, and what the assistant answered.
        transcript = text_of(bp, "#transcript")
        assert {"capital", "france"} <= set(transcript.lower().replace("?", "").split()), transcript
        reply = text_of(bp, "#reply")
        assert reply, "no reply shown"
        (done,) = bp.received("response.done", turn=1)
        assert done["interrupted"] is False
        assert " ".join(done["text"].split()) == " ".join(reply.split())

        # The reply's audio: all of it scheduled, all of it played to the end.
        (audio_done,) = bp.received("audio.done", turn=1)
        reply_samples = audio_done["bytes"] // 2
        assert reply_samples > 0
        assert hooks["scheduledSamples"] == reply_samples == hooks["playedSamples"], hooks
        assert hooks["receivedAudioBytes"] == audio_done["bytes"] == bp.sockets.received_audio_bytes

        # The microphone: about the held time of 24 kHz audio went out, loud enough, and the
        # server measured the same recording.
        sent = hooks["sentAudioBytes"]
        assert sent == bp.sockets.sent_audio_bytes
        assert abs(sent / BYTES_PER_SECOND - held) <= 0.5, (sent, held)
        assert rms(bp.sockets.sent_audio) > 0.25 * rms(question), "the recording is silent"
        # The page's echo cancelling, noise suppression and gain control change it a little
        # (0.8 for speech, 0.65 for the tone here; an unrelated signal gives under 0.1).
        assert similarity(bp.sockets.sent_audio, question) > 0.5, "the recording is not the file"
        assert metrics["audio_in_ms"] > 1000, metrics
        assert abs(metrics["audio_in_ms"] - sent * 1000 / BYTES_PER_SECOND) <= 50, (metrics, sent)

        # The latency waterfall of this turn is drawn, and the rest of the page agrees.
        assert_waterfall(bp, metrics)
        assert bp.page.get_attribute("#v2v-chart", "data-points") == "1"
        assert bp.page.get_attribute("#machine [data-state].active", "data-state") == "idle"
        entry = text_of(bp, '#conversation .turn[data-turn="1"]')
        assert transcript in entry, entry
        assert reply in entry, entry
        hands_free = bp.page.locator("#hands-free")
        assert hands_free.is_disabled() == ("hands_free" not in created["modes"])
        bp.finish()
    server_log_is_clean(server)


def test_provider_failure_then_recovery(new_page: NewPage, tmp_path: Path) -> None:
    """The language model answers 503: the page says so, goes idle, and the next turn works."""
    fake = quick_fake(failures={"chat": 503})
    wav = write_wav(tmp_path / "question.wav", tone_pcm(4.0))
    with (
        running_fake_openai(fake) as base_url,
        serving(tmp_path, openai_env(base_url)) as server,
        new_page(server.url, wav) as bp,
    ):
        bp.wait_connected()
        bp.require_hooks()

        # Turn 1: the chat endpoint fails once (no retries), the turn ends with an error.
        bp.hold_talk(0.8)
        bp.wait_for(
            "voiceFsm.lastError !== null && voiceFsm.state === 'idle'",
            "the error is reported and the page is idle",
        )
        (event,) = bp.received("error")
        assert (event["code"], event["stage"], event["turn"]) == ("provider-unavailable", "llm", 1)
        shown = assert_error_shown(bp, "provider-unavailable")
        assert "provider-unavailable" in shown, shown
        words = re.findall(r"[A-Za-z]{2,}", shown.replace("provider-unavailable", ""))
        assert len(words) >= 4, f"#error has no plain words besides the code: {shown!r}"
        assert text_of(bp, "#state") == "idle"
        assert len(fake.received("chat")) == 1
        assert not bp.sockets.events("turn.metrics")
        assert not bp.sockets.events("audio.start")

        # Turn 2: the provider is back.
        fake.failures.clear()
        bp.hold_talk(0.8)
        metrics = wait_turn(bp, 2)
        assert_no_error_shown(bp)
        assert text_of(bp, "#reply") == fake.reply
        assert text_of(bp, "#transcript") == fake.transcript
        assert metrics["turn"] == 2
        assert_waterfall(bp, metrics)
        assert bp.page.get_attribute("#v2v-chart", "data-points") == "1"  # turn 2's only
        (audio_done,) = bp.received("audio.done", turn=2)
        hooks = bp.hooks()
        assert hooks["playedSamples"] == hooks["scheduledSamples"] == audio_done["bytes"] // 2
        bp.finish()
    server_log_is_clean(server)


# Installed before the barge-in press: a capture-phase listener on window runs before the
# page's own pointerdown handler, notes the player's counters, then times how long after the
# press the page has no audio source left.
WATCH_BARGE_IN = """() => {
    const watch = (window.__bargeIn = {});
    window.addEventListener('pointerdown', () => {
        const t0 = performance.now();
        Object.assign(watch, {
            sourcesAtPress: voiceFsm.activeSources,
            playedSamplesAtPress: voiceFsm.playedSamples,
            playedMsAtPress: voiceFsm.playedMs,
            scheduledSamplesAtPress: voiceFsm.scheduledSamples,
        });
        const check = () => {
            if (voiceFsm.activeSources === 0) watch.silentAfterMs = performance.now() - t0;
            else if (performance.now() - t0 < 2000) setTimeout(check, 1);
        };
        setTimeout(check, 0);
    }, {capture: true, once: true});
}"""


def test_barge_in_stops_playback(new_page: NewPage, tmp_path: Path) -> None:
    """Pressing talk while the reply plays silences it at once and starts the next turn."""
    # About 8.5 s of reply audio, sent at about real time (100 ms chunks every 80 ms): the
    # server is still speaking when the page interrupts it.
    long_reply = (
        "Paris is the capital of France. It sits on the Seine in the north of the country. "
        "It has been the capital for most of the last thousand years."
    )
    fake = quick_fake(reply=long_reply, tts_chunk_delay=0.08)
    # One getUserMedia per page: both presses read on in the same file. 8 s of tone, once,
    # covers both holds (turn 1 from 0 s, the barge-in press about 2 s later) with room to spare.
    wav = write_wav(tmp_path / "question.wav", tone_pcm(8.0))
    with (
        running_fake_openai(fake) as base_url,
        serving(tmp_path, openai_env(base_url)) as server,
        new_page(server.url, wav) as bp,
    ):
        bp.wait_connected()
        bp.require_hooks()
        bp.hold_talk(1.0)
        bp.wait_for(
            "voiceFsm.state === 'speaking' && voiceFsm.playedMs > 300",
            "the reply is being spoken and 300 ms of it were played",
        )

        # The barge-in: the page stops every source at once, without waiting for the server.
        bp.page.evaluate(WATCH_BARGE_IN)
        fake.reply = "Sure."  # what turn 2 answers: short, so it is played to the end quickly
        bp.press_talk()
        bp.wait_for("voiceFsm.activeSources === 0", "playback stopped", timeout=0.15, poll=5)
        watch = bp.wait_for(
            "window.__bargeIn.silentAfterMs !== undefined && window.__bargeIn",
            "the barge-in watcher ran",
            timeout=2,
        )
        assert watch["sourcesAtPress"] > 0, watch
        assert watch["silentAfterMs"] < 150, watch

        # The server cancelled turn 1 while speaking and recorded turn 2.
        bp.wait_for(
            "voiceFsm.state === 'recording' && voiceFsm.turn === 2",
            "the server records turn 2",
        )
        (recording,) = bp.received("state", state="recording", turn=2)
        assert recording["previous"] == "speaking", recording
        (done,) = bp.received("response.done", turn=1)
        assert done["interrupted"] is True
        # The page told the server how much of the interrupted reply it had played.
        starts = bp.sent("input_audio.start", count=2)
        assert len(starts) == 2, starts
        assert "played_ms" not in starts[0], starts
        played_ms = starts[1].get("played_ms")
        assert isinstance(played_ms, int), starts
        assert played_ms > 0, starts
        assert abs(played_ms - watch["playedMsAtPress"]) <= 100, (played_ms, watch)
        assert bp.hook("lastPlayedMs") == played_ms

        # Nothing more of turn 1 is played while turn 2 is recorded.
        bp.pause(0.8)
        hooks = bp.hooks()
        assert hooks["activeSources"] == 0, hooks
        assert hooks["playedSamples"] == watch["playedSamplesAtPress"], (hooks, watch)
        assert hooks["scheduledSamples"] == watch["scheduledSamplesAtPress"], (hooks, watch)
        assert abs(hooks["playedMs"] - played_ms) <= 1, hooks
        scheduled_before_turn_2 = hooks["scheduledSamples"]

        # Turn 2 finishes normally, and only its audio plays.
        bp.release_talk()
        bp.wait_for(
            f"""{TURN_FAILED} || (voiceFsm.state === 'idle'
               && voiceFsm.lastMetrics !== null && voiceFsm.lastMetrics.turn === arg
               && voiceFsm.activeSources === 0)""",
            "turn 2 is over and played",
            arg=2,
        )
        bp.received("turn.metrics", turn=2)
        assert not bp.sockets.events("error"), bp.describe()
        (audio_done,) = bp.received("audio.done", turn=2)
        hooks = bp.hooks()
        turn_2_samples = audio_done["bytes"] // 2
        assert hooks["scheduledSamples"] - scheduled_before_turn_2 == turn_2_samples, hooks
        assert hooks["playedSamples"] - watch["playedSamplesAtPress"] == turn_2_samples, hooks
        assert text_of(bp, "#reply") == "Sure."
        bp.finish()
    server_log_is_clean(server)


def test_socket_drop_reconnects(new_page: NewPage, tmp_path: Path) -> None:
    """The server goes away and comes back on the same port: the page reconnects by itself."""
    fake = quick_fake()
    wav = write_wav(tmp_path / "question.wav", tone_pcm(2.0))
    port = free_port()
    with (
        running_fake_openai(fake) as base_url,
        serving(tmp_path, openai_env(base_url), port=port, name="first") as first,
        new_page(first.url, wav, allowed_console_errors=[REFUSED_SOCKET]) as bp,
    ):
        bp.wait_connected()
        bp.require_hooks()
        first_session = bp.wait_for("voiceFsm.sessionId", "the page has a session")
        assert bp.hook("reconnects") == 0

        stop_process(first.process)
        assert first.process.returncode == 0, first.output()
        bp.wait_for(
            "['closed', 'connecting'].includes(document.querySelector('#connection')"
            ".dataset.status) && voiceFsm.connection !== 'open'",
            "the page sees the socket closed",
            timeout=5,
        )
        assert bp.page.locator("#talk").is_disabled()

        with serving(tmp_path, openai_env(base_url), port=port, name="second") as second:
            # The page retries after 1 s, 2 s, 4 s, …: back within 10 s of the restart.
            bp.wait_connected(timeout=10)
            bp.wait_for(
                "voiceFsm.sessionId && voiceFsm.sessionId !== arg",
                "the page has the new server's session",
                arg=first_session,
                timeout=3,
            )
            hooks = bp.hooks()
            assert hooks["sessionId"], hooks
            assert hooks["sessionId"] != first_session, hooks
            assert hooks["reconnects"] >= 1, hooks
            assert hooks["connection"] == "open"
            bp.received("session.created", count=2)

            # The new session works.
            bp.hold_talk(0.8)
            wait_turn(bp, 1)
            assert text_of(bp, "#reply") == fake.reply
            bp.finish()
        server_log_is_clean(second)
    server_log_is_clean(first)
