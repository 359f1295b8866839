"""Hands-free mode in a real browser: the switch on, spoken questions, turns the server finds.

Headless Chromium's microphone is a WAV file (`--use-file-for-fake-audio-capture`, played once
from the page's getUserMedia on, which the switch triggers). The tests never touch the talk
button: switching hands-free on opens the microphone, the page streams it all the time, and
the server's Silero VAD starts and ends the turns (`vad.speech_started`, `vad.speech_stopped`).

- `test_hands_free_two_turns`: `voice-fsm serve` with no API key, so the embedded engines
  answer (faster-whisper with Whisper base, SmolLM2, Piper); two questions, two whole turns,
  then the switch off.
- `test_hands_free_barge_in`: the real OpenAI adapters against the fake OpenAI server, whose
  long reply is streamed at about real time, so the second question always arrives while the
  first reply is being spoken: the page silences it at once.
- `test_hands_free_by_the_realtime_vad` and `test_the_page_leaves_hands_free_when_the_server_does`:
  the turns found by OpenAI's Realtime transcription session (the fake Realtime server's VAD)
  instead of Silero; the page is the same. When that detector's connection drops, the server
  leaves hands-free mode, and so does the page.

Chromium, Playwright or the embedded engines (Silero VAD, Piper for the questions) missing:
the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from voice_fsm.testing import running_fake_openai
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig

from conftest import NewPage
from support.browser import (
    ARTIFACTS,
    KEY,
    BrowserPage,
    Server,
    openai_env,
    quick_fake,
    serving,
    tone_pcm,
    use_local_engines,
    write_wav,
)
from support.servers import clean_env, eventually_sync, skip_or_fail

pytestmark = [pytest.mark.browser, pytest.mark.integration]

QUESTIONS = ("What is the capital of France?", "What is the capital of Italy?")
TURN_STATES = ["recording", "transcribing", "thinking", "speaking", "idle"]
BYTES_PER_SECOND = 24_000 * 2  # PCM16 mono at 24 kHz, both ways
SAMPLES_PER_MS = 24

# The hooks of window.voiceFsm these tests read.
HOOKS = (
    "handsFree",
    "speechDetected",
    "vadEvents",
    "playedSamples",
    "scheduledSamples",
    "activeSources",
    "playedMs",
    "lastPlayedMs",
    "state",
    "stateHistory",
    "events",
    "sentAudioBytes",
    "lastMetrics",
    "lastError",
)

# Installed once the page is connected, before the switch is clicked: every server event the
# page handles (with the page's clock and its audio counters at that moment, before the page
# acts on it), every state the DOM shows (#state and the diagram's current node), every change
# of the talk button's `speech` class, and when the switch was clicked.
INSTRUMENT = """() => {
    const log = (window.__hf = {events: [], dom: [], talkSpeech: [], clickAt: null});
    const now = () => Math.round(performance.now());
    const counters = () => ({t: now(), played: voiceFsm.playedSamples,
        scheduled: voiceFsm.scheduledSamples, sources: voiceFsm.activeSources,
        playedMs: voiceFsm.playedMs, sent: voiceFsm.sentAudioBytes});
    const types = voiceFsm.events;
    const push = types.push;
    types.push = function (...items) {
        for (const type of items) log.events.push({type, ...counters()});
        return push.apply(this, items);
    };
    // vad.speech_started: what played just before the page acted, and how soon it was silent.
    const vad = voiceFsm.vadEvents;
    const vadPush = vad.push;
    vad.push = function (...items) {
        for (const what of items) {
            const at = {what, ...counters()};
            log.vad = [...(log.vad || []), at];
            const t0 = performance.now();
            const check = () => {
                if (voiceFsm.activeSources === 0) at.silentAfterMs = performance.now() - t0;
                else if (performance.now() - t0 < 2000) setTimeout(check, 1);
            };
            setTimeout(check, 0);
        }
        return vadPush.apply(this, items);
    };
    const state = document.querySelector('#state');
    const machine = document.querySelector('#machine');
    const talk = document.querySelector('#talk');
    const look = () => {
        const shown = {text: state.textContent, node: machine.dataset.current};
        const last = log.dom[log.dom.length - 1];
        if (!last || last.text !== shown.text || last.node !== shown.node) {
            log.dom.push({...shown, t: now()});
        }
        const speech = talk.classList.contains('speech');
        const lastSpeech = log.talkSpeech[log.talkSpeech.length - 1];
        if (lastSpeech === undefined ? speech : lastSpeech.on !== speech) {
            log.talkSpeech.push({on: speech, t: now()});
        }
    };
    const watch = (node, options) => new MutationObserver(look).observe(node, options);
    watch(state, {childList: true, characterData: true, subtree: true});
    watch(machine, {attributes: true, attributeFilter: ['data-current']});
    watch(talk, {attributes: true, attributeFilter: ['class']});
    look();
    document.querySelector('#hands-free').addEventListener('click', () => {
        log.clickAt = now();
    }, {capture: true});
}"""


@pytest.fixture(scope="module")
def questions() -> tuple[bytes, bytes]:
    """The two questions spoken by Piper (PCM16 24 kHz, 1.75 s and 1.67 s), no silence."""
    if not use_local_engines():  # fails under CI=true
        skip_or_fail("the embedded engines (Silero VAD, Piper) are not installed")
    from voice_fsm.testing.speech import spoken

    first, second = (spoken(question, lead_s=0.0) for question in QUESTIONS)
    return first, second


def microphone(path: Path, questions: tuple[bytes, bytes], lead: float, gap: float) -> Path:
    """`lead` s of silence, question 1, `gap` s of silence, question 2, 2 s of silence."""
    from voice_fsm.testing.speech import silence

    first, second = questions
    return write_wav(path, silence(lead) + first + silence(gap) + second + silence(2.0))


# ---------------------------------------------------------------- helpers


def switch_on(bp: BrowserPage) -> None:
    """Wait for the offered switch, instrument the page, click the switch on."""
    bp.wait_connected()
    bp.require_hooks(HOOKS)
    (created,) = bp.received("session.created")
    assert created["modes"] == ["push_to_talk", "hands_free"], created
    bp.wait_for("!document.querySelector('#hands-free').disabled", "the switch is enabled")
    assert not bp.page.locator("#hands-free").is_checked()
    assert bp.page.locator("#listening").is_hidden()
    assert bp.hook("handsFree") is False
    bp.page.evaluate(INSTRUMENT)

    # The page asks for hands-free, opens the microphone (the file starts) and streams it.
    bp.page.locator("#hands-free").click()
    bp.wait_for("voiceFsm.handsFree === true", "hands-free is on")
    (update,) = bp.sent("session.update")
    assert update["session"] == {"mode": "hands_free"}, update
    bp.received("session.updated")
    assert bp.page.locator("#hands-free").is_checked()
    assert bp.page.locator("#talk").is_disabled(), "the talk button is disabled in hands-free"
    assert bp.page.locator("#listening").is_visible()
    assert bp.page.locator("#listening").inner_text() == "listening…"
    assert bp.page.locator("#how-to-hands-free").is_visible()


def switch_off(bp: BrowserPage) -> None:
    """Click the switch off: push-to-talk again, and the page stops sending audio."""
    bp.page.locator("#hands-free").click()
    bp.wait_for("voiceFsm.handsFree === false", "hands-free is off")
    updates = bp.sent("session.update", count=2)
    assert updates[-1]["session"] == {"mode": "push_to_talk"}, updates
    bp.received("session.updated", count=2)
    assert bp.page.locator("#listening").is_hidden()
    assert bp.page.locator("#talk").is_enabled(), "the talk button works again"
    sent = bp.hook("sentAudioBytes")
    bp.pause(0.6)  # 15 chunks of 40 ms, had it gone on streaming
    assert bp.hook("sentAudioBytes") == sent, "the page still sends audio"
    assert bp.sockets.sent_audio_bytes == sent, "audio went over the socket after the switch"
    assert bp.hook("state") == "idle"


def timeline(bp: BrowserPage) -> str:
    """The server's turn events, in ms from the click on the switch, for failure messages."""
    log = bp.page.evaluate("window.__hf")
    t0 = log["clickAt"] or 0
    shown = []
    for i, seen in enumerate(log["events"]):
        kind = seen["type"]
        if kind in {"transcript.delta", "response.delta"}:
            continue
        detail = f"{seen['t'] - t0:6d} ms  {kind}"
        matching = [e for e in bp.sockets.received if e.get("type") == kind]
        index = sum(1 for e in log["events"][:i] if e["type"] == kind)
        event = matching[index] if index < len(matching) else {}
        detail += "".join(
            f" {k}={event[k]}"
            for k in ("turn", "state", "audio_ms", "text", "duration_ms", "interrupted")
            if k in event
        )
        detail += f"  (played {seen['played'] / 24_000:.2f} s, {seen['sources']} sources)"
        shown.append(detail)
    return "\n".join(shown)


def read_hooks(bp: BrowserPage) -> dict[str, Any]:
    """A snapshot of the `window.voiceFsm` hooks these tests read (HOOKS)."""
    snapshot: dict[str, Any] = bp.page.evaluate(
        "(names) => JSON.parse(JSON.stringify(Object.fromEntries("
        "names.map((name) => [name, window.voiceFsm[name]]))))",
        list(HOOKS),
    )
    return snapshot


def handled(log: dict[str, Any], kind: str, n: int = 0) -> dict[str, Any]:
    """The page's counters when it got the `n`-th server event of type `kind`."""
    found: dict[str, Any] = [e for e in log["events"] if e["type"] == kind][n]
    return found


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def entry(bp: BrowserPage, turn: int, selector: str = "") -> Any:
    return bp.page.locator(f'#conversation .turn[data-turn="{turn}"] {selector}'.strip())


def assert_entry_waterfall(bp: BrowserPage, turn: int, metrics: dict[str, Any]) -> None:
    bars = bp.page.eval_on_selector_all(
        f'#conversation .turn[data-turn="{turn}"] .waterfall[data-turn="{turn}"] .bar',
        "(bars) => bars.map((b) => [b.dataset.stage, b.dataset.ms])",
    )
    shown = dict(bars)
    for stage in ("stt", "llm_first_token", "tts_first_audio", "voice_to_voice"):
        assert shown.get(stage) == str(round(metrics[f"{stage}_ms"])), (turn, shown, metrics)


def server_log_is_clean(server: Server) -> None:
    assert "Traceback" not in server.log.read_text(errors="replace"), server.output()


# ---------------------------------------------------------------- two whole turns

# The microphone of test_hands_free_two_turns: 1 s of silence, question 1, GAP_S of silence,
# question 2, 2 s of silence. The gap is long enough for turn 1 to end, and its reply to be
# played to the end, before question 2 starts, so both turns run whole and the test is
# deterministic: question 1 ends at 2.75 s; the VAD waits for 0.5 s of silence; transcribing,
# the model and the first audio take 0.3 to 0.9 s here (allow 1.5 s on a busy machine); the
# reply, "The capital of France is Paris.", is 1.9 s of audio (at most about 2.8 s with the
# replies capped at MAX_REPLY_TOKENS). Playback ends by about 6 s (7.6 s at worst), and question
# 2 starts at 7.75 s (the VAD reports it 0.25 s later). With only 2 s between the questions,
# question 2 would come while the reply plays (the page silences it) or, on a slow machine,
# while the server is still on turn 1 (a barge-in: no turn.metrics for turn 1), which
# test_hands_free_barge_in covers on purpose.
GAP_S = 5.0
MAX_REPLY_TOKENS = 12


def test_hands_free_two_turns(
    new_page: NewPage, tmp_path: Path, questions: tuple[bytes, bytes]
) -> None:
    """Two questions, two whole turns; the talk button never touched; then the switch off."""
    wav = microphone(tmp_path / "two-questions.wav", questions, lead=1.0, gap=GAP_S)
    # The timings above are SmolLM2's: the page's hands-free turns are under test, not answers.
    env = clean_env(
        VOICE_FSM_LOCAL__LLM_MODEL="smollm2-135m",
        VOICE_FSM_LOCAL__LLM_MAX_TOKENS=str(MAX_REPLY_TOKENS),
    )

    with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
        switch_on(bp)
        (created,) = bp.received("session.created")
        assert created["stt"]["provider"] == created["llm"]["provider"] == "local", created

        # A look at the page while it hears question 2 (turn 1 done, the talk button pulsing).
        bp.wait_for("voiceFsm.vadEvents.length === 3", "question 2 is heard", timeout=20)
        assert bp.page.locator("#listening").inner_text() == "hearing you…"
        bp.pause(0.2)  # the talk button's colour change (0.15 s) is over
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        bp.page.screenshot(path=ARTIFACTS / f"{bp.name}-hearing.png", full_page=True)

        bp.wait_for(
            "voiceFsm.vadEvents.length >= 4 && voiceFsm.lastMetrics !== null"
            " && voiceFsm.lastMetrics.turn === 2 && voiceFsm.state === 'idle'"
            " && voiceFsm.activeSources === 0 && voiceFsm.playedSamples > 0"
            " && voiceFsm.playedSamples === voiceFsm.scheduledSamples",
            "two turns are over and their replies played",
            # Turn 2 then transcribes, answers and plays about 2 s of reply: 10 s ran out with a
            # 1.9 s transcription at load 3, 0.7 s of the reply still to play.
            timeout=30,
        )
        steps = timeline(bp)
        print(f"\n{steps}")
        log = bp.page.evaluate("window.__hf")
        hooks = read_hooks(bp)

        # The server found two turns in the stream, in order, and the page saw them.
        started = bp.received("vad.speech_started", count=2)
        stopped = bp.received("vad.speech_stopped", count=2)
        vad = sorted([*started, *stopped], key=bp.sockets.received.index)
        assert [(e["type"], e["turn"]) for e in vad] == [
            ("vad.speech_started", 1),
            ("vad.speech_stopped", 1),
            ("vad.speech_started", 2),
            ("vad.speech_stopped", 2),
        ], steps
        assert hooks["vadEvents"] == ["started", "stopped", "started", "stopped"], hooks
        # audio_ms: where in the stream (from the switch on) each question began and ended.
        q1_ms, q2_ms = (len(q) * 1000 // BYTES_PER_SECOND for q in questions)
        q2_at = 1000 + q1_ms + GAP_S * 1000
        assert abs(started[0]["audio_ms"] - 1000) < 500, steps
        assert abs(stopped[0]["audio_ms"] - (1000 + q1_ms)) < 500, steps
        assert abs(started[1]["audio_ms"] - q2_at) < 500, steps
        assert abs(stopped[1]["audio_ms"] - (q2_at + q2_ms)) < 500, steps
        # Without the talk button: no input_audio.start or stop, and no error.
        assert not bp.sockets.messages("input_audio.start"), bp.sockets.sent
        assert not bp.sockets.messages("input_audio.stop"), bp.sockets.sent
        assert not bp.sockets.events("error"), steps
        assert hooks["lastError"] is None, hooks

        # The DOM (#state and the diagram) went through every state of each turn, in order.
        dom = [(shown["text"], shown["node"]) for shown in log["dom"]]
        assert dom == [(s, s) for s in ["idle", *TURN_STATES, *TURN_STATES]], f"{dom}\n{steps}"
        for turn in (1, 2):
            states = [(e["state"], e["previous"]) for e in bp.sockets.events("state", turn=turn)]
            expected = list(zip(TURN_STATES, ["idle", *TURN_STATES[:-1]], strict=True))
            assert states == expected, (turn, states)
        # The talk button pulsed while the server heard each question.
        assert [change["on"] for change in log["talkSpeech"]] == [True, False, True, False], log
        assert hooks["speechDetected"] is False

        # What the server heard and answered, in a conversation entry per turn.
        assert bp.page.locator("#conversation .turn").count() == 2
        heard = [entry(bp, turn, ".bubble.user .text").inner_text() for turn in (1, 2)]
        for turn, text in enumerate(heard, 1):
            (done,) = bp.received("transcript.done", turn=turn)
            assert text == done["text"], (text, done)
            assert entry(bp, turn).get_attribute("data-status") == "done", turn
        # The page's turns are under test, not Whisper base's ear. After Chromium's noise
        # suppression it hears 'France' as 'friends' in most runs here (5 of 5; 0 of 3 with
        # noiseSuppression off, which the page keeps on to keep room noise out of the VAD), and
        # the same audio flips with 100 ms more silence after it. make eval-local measures it.
        # (The test prints what it heard; warnings are errors in this project's test run.)
        for text in heard:
            assert {"what", "capital"} <= words(text), heard
        replies = []
        for turn in (1, 2):
            (done,) = bp.received("response.done", turn=turn)
            assert done["interrupted"] is False, done
            shown = entry(bp, turn, ".bubble.assistant .text").inner_text()
            assert " ".join(shown.split()) == " ".join(done["text"].split()), (shown, done)
            replies.append(shown)

        # Each reply was played to the end: turn 1's before question 2 was heard, and nothing
        # of turn 1 was cut.
        audio = [bp.received("audio.done", turn=turn)[0]["bytes"] // 2 for turn in (1, 2)]
        before_1 = handled(log, "audio.start", 0)["played"]
        at_question_2 = handled(log, "vad.speech_started", 1)
        assert at_question_2["played"] - before_1 == audio[0], f"turn 1 not played\n{steps}"
        assert at_question_2["sources"] == 0, f"turn 1 still playing at question 2\n{steps}"
        assert hooks["playedSamples"] - at_question_2["played"] == audio[1], steps
        assert hooks["scheduledSamples"] == hooks["playedSamples"] == sum(audio), hooks
        assert hooks["lastPlayedMs"] is None, "the page cut a reply"

        # A latency waterfall per turn, and both turns in the chart.
        metrics = [bp.received("turn.metrics", turn=turn)[0] for turn in (1, 2)]
        for turn, turn_metrics in enumerate(metrics, 1):
            assert_entry_waterfall(bp, turn, turn_metrics)
        assert hooks["lastMetrics"] == metrics[1]
        assert bp.page.locator("#conversation .waterfall").count() == 2
        assert bp.page.get_attribute("#v2v-chart", "data-points") == "2"

        # The microphone streamed the whole time: the file up to question 2's end, at least.
        sent = hooks["sentAudioBytes"]
        assert sent / BYTES_PER_SECOND > (q2_at + q2_ms) / 1000, (sent, steps)
        assert bp.page.locator("#talk").is_disabled()

        switch_off(bp)
        print(
            f"heard {heard}, replies {replies}, voice to voice "
            f"{[m['voice_to_voice_ms'] for m in metrics]} ms"
        )
        bp.finish()
    server_log_is_clean(server)


# ---------------------------------------------------------------- barge-in


LONG_REPLY = (
    "Paris is the capital of France. It sits on the Seine in the north of the country. "
    "It has been the capital for most of the last thousand years."
)


def test_hands_free_barge_in(
    new_page: NewPage, tmp_path: Path, questions: tuple[bytes, bytes]
) -> None:
    """Question 2 while reply 1 is spoken: the server barges in and the page silences reply 1.

    Reply 1 is about 8.5 s of audio, streamed at about real time (100 ms every 80 ms) from
    about 3 s on, so the server is still speaking it when question 2 starts at 4.75 s.
    """
    fake = quick_fake(reply=LONG_REPLY, tts_chunk_delay=0.08)
    wav = microphone(tmp_path / "two-questions.wav", questions, lead=0.5, gap=2.5)
    with (
        running_fake_openai(fake) as base_url,
        serving(tmp_path, openai_env(base_url)) as server,
        new_page(server.url, wav) as bp,
    ):
        switch_on(bp)
        bp.wait_for(
            "voiceFsm.state === 'speaking' && voiceFsm.turn === 1 && voiceFsm.playedMs > 0",
            "reply 1 is being spoken and played",
            timeout=10,
        )
        fake.reply = "Sure."  # what turn 2 answers: short, so it is played to the end quickly

        bp.wait_for(
            "voiceFsm.vadEvents.length >= 4 && voiceFsm.lastMetrics !== null"
            " && voiceFsm.lastMetrics.turn === 2 && voiceFsm.state === 'idle'"
            " && voiceFsm.activeSources === 0",
            "turn 2 is over and played",
            timeout=15,
        )
        steps = timeline(bp)
        print(f"\n{steps}")
        log = bp.page.evaluate("window.__hf")
        hooks = read_hooks(bp)

        # The server barged in on its own reply when it heard question 2.
        assert hooks["vadEvents"] == ["started", "stopped", "started", "stopped"], steps
        (recording,) = bp.received("state", state="recording", turn=2)
        assert recording["previous"] == "speaking", steps
        (done,) = bp.received("response.done", turn=1)
        assert done["interrupted"] is True, steps
        assert not bp.sockets.messages("input_audio.start"), bp.sockets.sent
        assert not bp.sockets.events("error"), steps

        # The page silenced reply 1 as soon as it got vad.speech_started, as on a push-to-talk
        # barge-in, and played nothing more of it.
        barge_in = log["vad"][2]
        assert barge_in["what"] == "started"
        assert barge_in["sources"] > 0, f"reply 1 was not playing\n{steps}"
        assert barge_in["silentAfterMs"] < 50, barge_in
        assert hooks["lastPlayedMs"] == barge_in["playedMs"], (hooks, barge_in)
        assert 0 < barge_in["playedMs"] < 8000, barge_in
        (turn_2_audio,) = bp.received("audio.done", turn=2)
        turn_2_samples = turn_2_audio["bytes"] // 2
        assert hooks["playedSamples"] - barge_in["played"] == turn_2_samples, (hooks, barge_in)
        assert hooks["scheduledSamples"] - barge_in["scheduled"] == turn_2_samples, hooks
        # Turn 1's entry says it was interrupted, and how much of it was heard.
        assert entry(bp, 1).get_attribute("data-status") == "interrupted"
        assert "You interrupted it after" in entry(bp, 1, ".turn-note").inner_text()
        assert entry(bp, 2).get_attribute("data-status") == "done"
        assert entry(bp, 2, ".bubble.assistant .text").inner_text() == "Sure."
        assert bp.page.locator("#conversation .turn").count() == 2

        switch_off(bp)
        bp.finish()
    server_log_is_clean(server)


# ---------------------------------------------------------------- the Realtime VAD


@pytest.fixture
def fake_realtime(realtime_server: tuple[FakeRealtimeConfig, str]) -> FakeRealtimeConfig:
    """The fake Realtime server, hearing the two questions (one transcript per item)."""
    realtime_server[0].reset(api_key=KEY, transcripts=QUESTIONS, transcription_delay=0.05)
    return realtime_server[0]


def realtime_env(realtime_base_url: str, openai_base_url: str) -> dict[str, str]:
    """Speech-to-text and hands-free turns by the Realtime transcription session (the fake
    Realtime server), even though Silero is installed; the fake OpenAI server answers."""
    env = openai_env(openai_base_url)
    env.update(
        VOICE_FSM_STT__BASE_URL=realtime_base_url,
        VOICE_FSM_STT__LIVE="true",
        VOICE_FSM_VAD__PROVIDER="openai-realtime",
    )
    return env


def test_hands_free_by_the_realtime_vad(
    new_page: NewPage,
    tmp_path: Path,
    realtime_server: tuple[FakeRealtimeConfig, str],
    fake_realtime: FakeRealtimeConfig,
) -> None:
    """Two utterances, two turns found and transcribed by the Realtime session, one connection."""
    question = tone_pcm(1.5)
    silent = bytes(BYTES_PER_SECOND)
    wav = write_wav(tmp_path / "mic.wav", silent + question + silent * 5 + question + silent * 2)
    with (
        running_fake_openai(quick_fake()) as base_url,
        serving(tmp_path, realtime_env(realtime_server[1], base_url)) as server,
        new_page(server.url, wav) as bp,
    ):
        switch_on(bp)
        bp.wait_for(
            "voiceFsm.vadEvents.length >= 4 && voiceFsm.lastMetrics !== null"
            " && voiceFsm.lastMetrics.turn === 2 && voiceFsm.state === 'idle'",
            "two turns are over",
            timeout=20,
        )
        steps = timeline(bp)
        assert read_hooks(bp)["vadEvents"] == ["started", "stopped", "started", "stopped"], steps
        started = bp.received("vad.speech_started", count=2)
        assert [e["turn"] for e in started] == [1, 2], steps
        # OpenAI's positions: each start less its 300 ms of padding.
        assert abs(started[0]["audio_ms"] - 700) < 300, steps
        assert abs(started[1]["audio_ms"] - 7200) < 300, steps
        heard = [bp.received("transcript.done", turn=turn)[0]["text"] for turn in (1, 2)]
        assert heard == list(QUESTIONS), steps
        for turn in (1, 2):
            assert entry(bp, turn).get_attribute("data-status") == "done", turn
            assert entry(bp, turn, ".bubble.user .text").inner_text() == heard[turn - 1]
        assert not bp.sockets.events("error"), steps
        # One connection found and transcribed both: the hands-free stream's.
        assert [c.query for c in fake_realtime.connections] == [{"intent": "transcription"}]
        assert fake_realtime.received("input_audio_buffer.commit") == []

        switch_off(bp)
        eventually_sync(lambda: fake_realtime.closed == [0])
        bp.finish()
    server_log_is_clean(server)


def test_the_page_leaves_hands_free_when_the_server_does(
    new_page: NewPage,
    tmp_path: Path,
    realtime_server: tuple[FakeRealtimeConfig, str],
    fake_realtime: FakeRealtimeConfig,
) -> None:
    """The Realtime connection drops mid-question: an error, and the switch goes off."""
    fake_realtime.drop_after_ms = 1500
    silent = bytes(BYTES_PER_SECOND)
    wav = write_wav(tmp_path / "mic.wav", silent + tone_pcm(3.0) + silent * 3)
    with (
        running_fake_openai(quick_fake()) as base_url,
        serving(tmp_path, realtime_env(realtime_server[1], base_url)) as server,
        new_page(server.url, wav) as bp,
    ):
        switch_on(bp)
        bp.wait_for("voiceFsm.lastError !== null", "the error", timeout=10)
        (error,) = bp.received("error")
        assert (error["code"], error["stage"], error["turn"]) == ("provider-unavailable", "stt", 1)
        updated = bp.received("session.updated", count=2)
        assert updated[-1]["session"]["mode"] == "push_to_talk"
        bp.wait_for("voiceFsm.handsFree === false", "the page left hands-free")
        assert not bp.page.locator("#hands-free").is_checked()
        assert bp.page.locator("#talk").is_enabled(), "the talk button works again"
        assert bp.page.locator("#error").is_visible()
        assert entry(bp, 1).get_attribute("data-status") == "error"
        assert len(bp.sent("session.update")) == 1, "the page did not ask for push_to_talk"
        sent = bp.hook("sentAudioBytes")
        bp.pause(0.4)
        assert bp.hook("sentAudioBytes") == sent, "the page still sends audio"
        assert len(bp.sockets.events("error")) == 1

        fake_realtime.drop_after_ms = None  # hands-free may be switched on again
        bp.page.locator("#hands-free").click()
        bp.wait_for("voiceFsm.handsFree === true", "hands-free is on again")
        updated = bp.received("session.updated", count=3)
        assert updated[-1]["session"]["mode"] == "hands_free"
        eventually_sync(lambda: len(fake_realtime.connections) == 2)
        bp.finish()
    server_log_is_clean(server)
