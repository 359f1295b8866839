"""What a newcomer sees first, in real Chromium at 1280x800 (issue 11, items 4 and 9).

- The header names each stage's engine as the server's session.created describes it (provider
  and model), within the viewport without scrolling: the fake providers, the embedded engines
  with no API key, and OpenAI's (the only engine whose voice the session's `voice` sets).
- While the page still plays a reply the server has finished sending, the server's state shows
  `idle` and a badge beside it says the page is playing; once the audio ends only `idle` is left.
- The state diagram's edges and labels are machine.py's transitions and trigger names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voice_fsm.machine import TRANSITIONS
from voice_fsm.testing import running_fake_openai

from conftest import NewPage
from support.browser import (
    BrowserPage,
    openai_env,
    quick_fake,
    serving,
    tone_pcm,
    use_local_engines,
    write_wav,
)
from support.servers import QUICK_FAKES, clean_env, fake_env

pytestmark = [pytest.mark.browser, pytest.mark.integration]

VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path("/tmp")
STAGE_NAMES = {"stt": "speech-to-text", "llm": "LLM", "tts": "speech"}
# 130 characters: the fake speaks 40 ms a character, so about 5 s of audio sent at once.
LONG_REPLY = (
    "The capital of France is Paris. It has been the capital for a very long time, "
    "and it is a lovely city to visit in the spring."
)


def shot(bp: BrowserPage, name: str) -> Path:
    """A screenshot of the viewport (what a user sees without scrolling) under /tmp."""
    path = SCREENSHOTS / f"voice-fsm-first-hour-{name}.png"
    bp.page.screenshot(path=str(path))
    return path


def engines_shown(bp: BrowserPage) -> dict[str, Any]:
    """#engines: its text per stage, its box, and whether it is visible."""
    shown: dict[str, Any] = bp.page.evaluate(
        """() => {
            const el = document.querySelector('#engines');
            const box = el.getBoundingClientRect();
            const stages = {};
            for (const part of el.querySelectorAll('.engine')) {
                stages[part.dataset.stage] = part.textContent.trim();
            }
            return {text: el.innerText.trim(), stages, hidden: el.hidden,
                    box: {top: box.top, bottom: box.bottom, left: box.left, right: box.right},
                    viewport: {width: innerWidth, height: innerHeight},
                    footer: document.querySelector('#providers').innerText.trim()};
        }"""
    )
    return shown


def assert_engines(bp: BrowserPage, *, voice: str | None = None) -> dict[str, Any]:
    """#engines names each stage's provider and model of session.created, in the viewport, and
    OpenAI's voice only when given (`voice`)."""
    (created,) = bp.received("session.created")
    bp.wait_for("!document.querySelector('#engines').hidden", "#engines is filled in")
    shown = engines_shown(bp)
    assert bp.page.locator("#engines").is_visible(), shown
    box, viewport = shown["box"], shown["viewport"]
    assert viewport == VIEWPORT, shown
    assert 0 <= box["top"] < box["bottom"] <= viewport["height"], f"not in the viewport: {shown}"
    assert 0 <= box["left"] < box["right"] <= viewport["width"], f"not in the viewport: {shown}"
    for stage, name in STAGE_NAMES.items():
        info = created[stage]
        expected = f"{name}: {info['provider']} {info['model']}"
        if stage == "tts" and voice is not None:
            expected += f", voice {voice}"
        assert shown["stages"][stage] == expected, (stage, shown, created)
    if voice is None:
        assert "voice" not in shown["text"], shown
        assert created["session"]["voice"] not in shown["text"] + shown["footer"], shown
    assert created["session_id"] in shown["footer"], shown
    return shown


def assert_diagram_is_machine_py(bp: BrowserPage) -> None:
    """#machine draws every edge of machine.py's TRANSITIONS, no other, each labelled with its
    trigger names."""
    drawn = bp.page.evaluate(
        """() => ({
            edges: [...document.querySelectorAll('#machine .edge')].map((e) =>
                [e.dataset.edge, e.dataset.triggers]),
            labels: [...document.querySelectorAll('#machine .edge-label')].map((e) =>
                [e.textContent, e.dataset.triggers]),
        })"""
    )
    expected = {
        (source.value, t["dest"].value, t["trigger"]) for t in TRANSITIONS for source in t["source"]
    }
    edges = {
        (*edge.split(">"), trigger)
        for edge, triggers in drawn["edges"]
        for trigger in triggers.split()
    }
    assert edges == expected, drawn["edges"]
    assert len(drawn["edges"]) == len({edge for edge, _ in drawn["edges"]}), drawn["edges"]
    labelled = [word for text, _ in drawn["labels"] for word in text.split(" · ")]
    assert set(labelled) == {t["trigger"] for t in TRANSITIONS}, drawn["labels"]
    # Each trigger is written once, or once per state it leads to (stop: one per pipeline).
    for trigger in set(labelled):
        dests = {t["dest"] for t in TRANSITIONS if t["trigger"] == trigger}
        assert labelled.count(trigger) <= len(dests), (trigger, drawn["labels"])
    for text, triggers in drawn["labels"]:
        assert text == " · ".join(triggers.split()), drawn["labels"]
    # Each edge's triggers are written on a label: its own, or the shared one of its path.
    for edge, triggers in drawn["edges"]:
        assert any(set(triggers.split()) <= set(label.split()) for _, label in drawn["labels"]), (
            edge,
            triggers,
            drawn["labels"],
        )


# Polled in the page: what the state line, the diagram and the turn say, read at one instant.
SNAPSHOT = """() => {
    const text = (sel) => document.querySelector(sel).textContent.trim();
    const badge = document.querySelector('#playback');
    return {state: voiceFsm.state, playing: voiceFsm.playing, pill: text('#state'),
            badge: badge.hidden ? null : badge.textContent.trim(),
            badgeVisible: badge.checkVisibility(),
            node: document.querySelector('#machine [data-state].active').dataset.state,
            caption: text('#machine .machine-caption'),
            turn: text('#conversation .turn[data-turn="1"] .turn-status')};
}"""


def assert_playing_beside_idle(bp: BrowserPage) -> None:
    """A turn whose reply lasts seconds: while the page plays what the server has finished
    sending, the pill says idle and a badge says the page plays; then only idle."""
    bp.hold_talk(1.1)
    during = bp.wait_for(
        f"voiceFsm.state === 'idle' && voiceFsm.playing && voiceFsm.lastMetrics !== null"
        f" && ({SNAPSHOT})()",
        "the server is idle while the page plays the reply",
        timeout=10,
        poll=10,
    )
    path_during = shot(bp, "idle-while-playing")
    (done,) = bp.received("audio.done", turn=1)
    assert done["duration_ms"] >= 4000, done  # the page has seconds of it left to play
    assert during["pill"] == "idle", during
    assert during["badge"] == "playing reply", during
    assert during["badgeVisible"], during
    assert during["node"] == "idle", during
    assert "still playing" in during["caption"], during
    assert during["turn"] == "done · playing reply", during

    after = bp.wait_for(
        f"!voiceFsm.playing && voiceFsm.playedSamples === voiceFsm.scheduledSamples"
        f" && ({SNAPSHOT})()",
        "the reply has played to the end",
        timeout=15,
    )
    path_after = shot(bp, "idle-after-playing")
    assert after["pill"] == "idle", after
    assert after["badge"] is None, after
    assert not after["badgeVisible"], after
    assert after["node"] == "idle", after
    assert after["caption"] == "Waiting for you to talk.", after
    assert after["turn"] == "done", after
    assert bp.hook("playedSamples") == done["bytes"] // 2
    print(f"screenshots {path_during} {path_after}\nduring {during}\nafter {after}")


def test_fake_providers(new_page: NewPage, tmp_path: Path) -> None:
    """Fake providers: their names, not OpenAI's voice; the diagram is machine.py's table; the
    page plays on after the server went idle, and says so."""
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.0))
    env = fake_env(**QUICK_FAKES, VOICE_FSM_FAKE__REPLY=LONG_REPLY)
    with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
        bp.page.set_viewport_size(VIEWPORT)
        bp.wait_connected()
        shown = assert_engines(bp)
        (created,) = bp.received("session.created")
        assert created["session"]["voice"] == "alloy"  # set, and not OpenAI's engine: not shown
        assert shown["stages"] == {
            "stt": "speech-to-text: fake fake-stt",
            "llm": "LLM: fake fake-llm",
            "tts": "speech: fake fake-tts",
        }

        assert_diagram_is_machine_py(bp)
        path = shot(bp, "fake-engines")
        print(f"screenshot {path}: {shown['text']!r}, box {shown['box']}")
        assert_playing_beside_idle(bp)
        bp.finish()


def test_local_engines_in_view(new_page: NewPage, tmp_path: Path) -> None:
    """No API key: the embedded engines, named as the server names them, and no voice.

    The smaller of the two named LLMs: loading Qwen (491 MB) would triple the cost of a test
    that only reads the names."""
    if not use_local_engines():
        pytest.skip("the embedded engines are not installed")
    wav = write_wav(tmp_path / "silence.wav", bytes(4800))
    env = clean_env(VOICE_FSM_LOCAL__LLM_MODEL="smollm2-135m")
    with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
        bp.page.set_viewport_size(VIEWPORT)
        bp.wait_connected(timeout=30)
        shown = assert_engines(bp)
        (created,) = bp.received("session.created")
        assert {created[s]["provider"] for s in STAGE_NAMES} == {"local"}, created
        assert "whisper" in shown["stages"]["stt"], shown
        assert "smollm2" in shown["stages"]["llm"].lower(), shown
        assert "piper" in shown["stages"]["tts"], shown
        path = shot(bp, "local-engines")
        print(f"screenshot {path}: {shown['text']!r}, box {shown['box']}")
        bp.finish()


def test_openai_engines_show_the_voice(new_page: NewPage, tmp_path: Path) -> None:
    """OpenAI's engines (on the fake OpenAI API): their models, and the voice they speak with."""
    wav = write_wav(tmp_path / "silence.wav", bytes(4800))
    with running_fake_openai(quick_fake()) as base_url:
        env = {**openai_env(base_url), "VOICE_FSM_TTS__VOICE": "verse"}
        with serving(tmp_path, env) as server, new_page(server.url, wav) as bp:
            bp.page.set_viewport_size(VIEWPORT)
            bp.wait_connected()
            shown = assert_engines(bp, voice="verse")
            (created,) = bp.received("session.created")
            assert created["tts"]["provider"].startswith("openai"), created
            path = shot(bp, "openai-engines")
            print(f"screenshot {path}: {shown['text']!r}")
            bp.finish()
