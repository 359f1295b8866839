"""A rolling restart as the page sees it: real Chromium loads the page through Debian's HAProxy
(the shipped deploy/haproxy.cfg) in front of two `voice-fsm serve` processes, and the process
its session is on gets SIGTERM while a push-to-talk turn is in flight.

The turn finishes (its reply is shown and played to its end), the socket closes with 1001
"server shutting down", the page reconnects by itself through HAProxy to the other process
without ever seeing an error, and a new push-to-talk turn works there.

Chromium or Playwright missing: skipped, except under CI=true.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from conftest import NewPage
from support.browser import Server, serving, tone_pcm, write_wav
from support.haproxy import HAProxy, running_haproxy
from support.servers import eventually_sync, fake_env

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# The reply's audio comes faster than it plays (as from OpenAI's speech), so it is still
# playing when the drained process closes the socket; the transcription takes long enough to
# send the signal while the turn is in flight.
FAKES = {
    "VOICE_FSM_SERVER__DRAIN_S": "10",
    "VOICE_FSM_SERVER__TRUSTED_PROXIES": "127.0.0.1",
    "VOICE_FSM_FAKE__REPLY": "The capital of France is Paris, a city on the Seine.",
    "VOICE_FSM_FAKE__STT_DELAY": "0.6",
    "VOICE_FSM_FAKE__LLM_FIRST_TOKEN_DELAY": "0.2",
    "VOICE_FSM_FAKE__LLM_TOKEN_DELAY": "0.01",
    "VOICE_FSM_FAKE__TTS_FIRST_AUDIO_DELAY": "0.1",
}
CLOSED_1001 = "WebSocket closed (code 1001, server shutting down)"
DROPPED_NOTE = "The connection dropped before this turn finished."
# Turn `arg` of the current session is over: idle, its metrics in, all audio played.
TURN_PLAYED = """
    voiceFsm.state === 'idle' && voiceFsm.lastMetrics !== null
    && voiceFsm.lastMetrics.turn === arg && voiceFsm.activeSources === 0
    && voiceFsm.playedSamples === voiceFsm.scheduledSamples
"""


@contextmanager
def two_servers_behind_haproxy(tmp_path: Path) -> Iterator[tuple[Server, Server, HAProxy]]:
    env = fake_env(**FAKES)
    with ExitStack() as stack:
        first = stack.enter_context(serving(tmp_path, env, name="fsm1"))
        second = stack.enter_context(serving(tmp_path, env, name="fsm2"))
        proxy = stack.enter_context(
            running_haproxy(tmp_path, [("fsm1", first.port), ("fsm2", second.port)])
        )
        yield first, second, proxy


def runs(server: Server, session_id: str) -> bool:
    """Whether `server` runs the session (its JSON log names it)."""
    return f'"session_id": "{session_id}"' in server.log.read_text(errors="replace")


def test_sigterm_to_the_pages_process_finishes_its_turn_and_the_page_moves_on(
    new_page: NewPage, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.0))
    with (
        two_servers_behind_haproxy(tmp_path) as (first, second, proxy),
        new_page(f"{proxy.http_url}/", wav, loop=True) as bp,
    ):
        console: list[str] = []
        bp.page.on("console", lambda message: console.append(message.text))
        bp.wait_connected()
        bp.require_hooks()
        session_id = bp.wait_for("voiceFsm.sessionId", "the page has a session")
        eventually_sync(lambda: runs(first, session_id) or runs(second, session_id), 5)
        home, other = (first, second) if runs(first, session_id) else (second, first)

        # A turn in flight: released, the server transcribing it.
        bp.hold_talk(1.0)
        bp.wait_for(
            "['transcribing', 'thinking'].includes(voiceFsm.state)",
            "the server is working on the turn",
        )
        home.process.send_signal(signal.SIGTERM)

        # The turn finished on the draining process: reply, audio and metrics all came.
        (done,) = bp.received("response.done", turn=1, timeout=10)
        (audio_done,) = bp.received("audio.done", turn=1)
        bp.received("turn.metrics", turn=1)
        assert done["interrupted"] is False
        # Then the 1001 close, and the page is back on the other process through HAProxy.
        bp.wait_for("voiceFsm.reconnects === 1", "the page reconnected", timeout=15)
        bp.wait_connected()
        moved_to = bp.hook("sessionId")
        eventually_sync(lambda: runs(other, moved_to), 5)
        assert CLOSED_1001 in console, console
        assert home.process.wait(15) == 0, home.output()

        # The reply of the finished turn was played to its end, not cut by the close.
        reply_samples = audio_done["bytes"] // 2
        bp.wait_for(
            "voiceFsm.activeSources === 0 && voiceFsm.playedSamples === arg",
            "the first reply played to its end",
            arg=reply_samples,
        )
        assert bp.hook("scheduledSamples") == reply_samples
        conversation = bp.page.locator("#conversation").inner_text()
        assert DROPPED_NOTE not in conversation, conversation

        # A new push-to-talk turn works on the other process.
        bp.hold_talk(1.0)
        bp.wait_for(TURN_PLAYED, "the new session's first turn played", arg=1, timeout=15)
        (second_done,) = bp.received("audio.done", turn=1, count=2)[1:]
        assert bp.hook("playedSamples") == reply_samples + second_done["bytes"] // 2
        assert bp.hook("lastError") is None
        bp.finish()
    drained = [line for line in home.log.read_text().splitlines() if '"server.drained"' in line]
    assert len(drained) == 1, home.output()
    assert '"drained": 1' in drained[0], drained
    assert '"cut": 0' in drained[0], drained
    for server in (first, second):
        assert "Traceback" not in server.log.read_text(errors="replace"), server.output()
