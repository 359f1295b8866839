"""Tool turns on the page, in a real browser: headless Chromium talks to `voice-fsm serve`, whose
language model (OpenAI's adapter against the fake OpenAI server) calls a tool.

The fake model calls the built-in calculator with 17 * 23 and answers with its result; the page
must light the `acting` node while the tool runs, show the call and its result (391) between the
user's words and the reply, and play the reply to the end. A second test makes the model call a
client tool the page does not run (declared by the test, as another program would): the page
shows it, answers nothing, and the turn goes on once the server gives up waiting.

Chromium or Playwright missing: the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from voice_fsm.testing import running_fake_openai
from voice_fsm.testing.fake_tool_calls import calling

from conftest import NewPage
from support.browser import (
    BrowserPage,
    Server,
    is_subsequence,
    openai_env,
    quick_fake,
    serving,
    tone_pcm,
    write_wav,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

EXPRESSION = "17 * 23"
PRODUCT = "391"
BUILTINS = {"VOICE_FSM_TOOLS__BUILTINS": "on"}  # the clock and the calculator
CALL_STATES = ["recording", "transcribing", "thinking", "acting", "thinking", "speaking", "idle"]

# Installed before the press: every node of the diagram that is lit (class `active`), in order,
# as the page draws it (not the hook the page keeps of its states).
WATCH_NODES = """() => {
    const lit = (window.__litNodes = []);
    const note = () => {
        const node = document.querySelector('#machine .node.active');
        const state = node ? node.dataset.state : null;
        if (lit[lit.length - 1] !== state) lit.push(state);
    };
    new MutationObserver(note).observe(document.querySelector('#machine'),
        {subtree: true, attributes: true, attributeFilter: ['class']});
}"""

# Turn `arg` is over: the page is idle, has the turn's metrics and played all the reply audio.
TURN_OVER = """
    (voiceFsm.lastError !== null && voiceFsm.lastError.turn === arg)
    || (voiceFsm.state === 'idle' && voiceFsm.lastMetrics !== null
        && voiceFsm.lastMetrics.turn === arg
        && voiceFsm.playedSamples === voiceFsm.scheduledSamples && voiceFsm.scheduledSamples > 0)
"""


def product_answer(results: list[str]) -> str:
    """The fake model's answer to the calculator's result (its JSON output)."""
    return f"{EXPRESSION} is {json.loads(results[0])['result']}."


def wait_turn_played(bp: BrowserPage, turn: int, *, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until `turn` is over and played to the end; fail on an error. Its turn.metrics."""
    bp.wait_for(TURN_OVER, f"turn {turn} is over and its audio played", arg=turn, timeout=timeout)
    error = bp.hook("lastError")
    assert error is None or error["turn"] != turn, f"turn {turn} failed: {error}\n{bp.describe()}"
    (metrics,) = bp.received("turn.metrics", turn=turn)
    hooks = bp.hooks()
    (audio_done,) = bp.received("audio.done", turn=turn)
    assert hooks["scheduledSamples"] == hooks["playedSamples"] == audio_done["bytes"] // 2, hooks
    return metrics


def shown_calls(bp: BrowserPage, turn: int) -> list[dict[str, Any]]:
    """The tool calls the conversation shows for `turn`: their data attributes and text."""
    calls: list[dict[str, Any]] = bp.page.eval_on_selector_all(
        f'#conversation .turn[data-turn="{turn}"] .tool-call',
        """(items) => items.map((item) => ({
            status: item.dataset.status, runsOn: item.dataset.runsOn, callId: item.dataset.callId,
            name: item.querySelector('.tool-name').textContent,
            args: item.querySelector('.tool-args').textContent,
            result: item.querySelector('.tool-result').hidden
                ? null : item.querySelector('.tool-result').textContent,
            text: item.innerText}))""",
    )
    return calls


def entry_layout(bp: BrowserPage, turn: int) -> list[str]:
    """The classes of the turn entry's parts, in the order they are drawn."""
    layout: list[str] = bp.page.eval_on_selector(
        f'#conversation .turn[data-turn="{turn}"]',
        "(entry) => [...entry.children].map((child) => child.className)",
    )
    return layout


def server_log_is_clean(server: Server) -> None:
    assert "Traceback" not in server.log.read_text(errors="replace"), server.output()


def test_a_server_tool_call_is_shown_and_answered(new_page: NewPage, tmp_path: Path) -> None:
    """The model calls the calculator: `acting` lights up, the call and 391 are shown, the reply
    that says 391 is played to the end."""
    fake = quick_fake(
        transcript=f"What is {EXPRESSION}?",
        chat_script=calling(("calculator", {"expression": EXPRESSION}), answer=product_answer),
    )
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.5))
    with (
        running_fake_openai(fake) as base_url,
        serving(tmp_path, {**openai_env(base_url), **BUILTINS}) as server,
        new_page(server.url, wav) as bp,
    ):
        bp.wait_connected()
        bp.require_hooks()
        bp.require_hooks(["toolCalls"])
        bp.page.evaluate(WATCH_NODES)
        before = len(bp.hook("stateHistory"))

        bp.hold_talk(0.8)
        metrics = wait_turn_played(bp, 1)

        # The machine went thinking -> acting -> thinking, and the diagram lit the node.
        history = bp.hook("stateHistory")[before:]
        assert is_subsequence(CALL_STATES, history), history
        lit = bp.page.evaluate("window.__litNodes")
        assert is_subsequence(["thinking", "acting", "thinking", "idle"], lit), lit
        assert bp.page.get_attribute("#machine [data-state].active", "data-state") == "idle"

        # What went over the socket: the call, then its result, then the reply.
        (call,) = bp.received("tool.call", turn=1)
        assert (call["name"], call["runs_on"]) == ("calculator", "server"), call
        assert json.loads(call["arguments"]) == {"expression": EXPRESSION}
        (result,) = bp.received("tool.result", turn=1)
        assert result["call_id"] == call["call_id"], (call, result)
        assert result["ok"] is True, result
        assert json.loads(result["output"])["result"] == int(PRODUCT)
        order = [e["type"] for e in bp.sockets.received]
        assert order.index("tool.call") < order.index("tool.result")
        assert order.index("tool.result") < order.index("response.done")
        # The page answers no server tool.
        assert not bp.sockets.messages("tool.result")

        # The page's record of it (the test hook).
        (record,) = bp.hook("toolCalls")
        assert record["call_id"] == call["call_id"]
        assert (record["turn"], record["name"], record["status"]) == (1, "calculator", "ok")
        assert record["output"] == result["output"]
        assert record["duration_ms"] == result["duration_ms"]

        # The conversation shows it between the user's words and the reply, in words.
        (shown,) = shown_calls(bp, 1)
        assert (shown["status"], shown["runsOn"], shown["name"]) == ("ok", "server", "calculator")
        assert EXPRESSION in shown["args"], shown
        assert PRODUCT in (shown["result"] or ""), shown
        assert f"ok · {result['duration_ms']} ms" in shown["text"], shown
        assert "client tool" not in shown["text"], shown
        layout = entry_layout(bp, 1)
        assert layout.index("bubble user") < layout.index("tool-calls"), layout
        assert layout.index("tool-calls") < layout.index("bubble assistant"), layout

        # The reply says the result, and the turn's metrics count the call.
        reply = bp.page.locator("#reply").inner_text().strip()
        assert reply == f"{EXPRESSION} is {PRODUCT}.", reply
        (timing,) = metrics["tools"]
        assert (timing["name"], timing["runs_on"], timing["ok"]) == ("calculator", "server", True)
        bp.finish()
    server_log_is_clean(server)


DOOR_TOOL = {
    "type": "function",
    "name": "door_state",
    "description": "Whether a door of the house is open.",
    "parameters": {
        "type": "object",
        "properties": {"door": {"type": "string"}},
        "required": ["door"],
    },
}


def declaring_door_tool(bp: BrowserPage) -> None:
    """Reload the page with its socket routed through the test, which declares the client tool
    DOOR_TOOL on it, as a program using the protocol would (the page declares no tools)."""

    def declare_tool(ws: Any) -> None:
        to_server = ws.connect_to_server()  # the page's messages still go through as they are
        to_server.send(json.dumps({"type": "session.update", "session": {"tools": [DOOR_TOOL]}}))

    bp.page.route_web_socket("**/ws*", declare_tool)
    bp.page.reload()
    bp.wait_connected()
    bp.require_hooks(["toolCalls"])
    (updated,) = bp.received("session.updated")
    assert [tool["name"] for tool in updated["session"]["tools"]] == ["door_state"], updated


@contextmanager
def door_tool_page(
    new_page: NewPage, tmp_path: Path, *, client_timeout_s: float
) -> Iterator[BrowserPage]:
    """A page whose session has the client tool DOOR_TOOL; the fake model calls it for the
    front door, then says what it got."""
    fake = quick_fake(
        transcript="Is the front door open?",
        chat_script=calling(
            ("door_state", {"door": "front"}),
            answer=lambda results: "I could not check the door: " + results[0],
        ),
    )
    wav = write_wav(tmp_path / "question.wav", tone_pcm(1.5))
    env = {
        "VOICE_FSM_TOOLS__BUILTINS": "off",
        "VOICE_FSM_TOOLS__CLIENT_TIMEOUT_S": str(client_timeout_s),
    }
    with (
        running_fake_openai(fake) as base_url,
        serving(tmp_path, {**openai_env(base_url), **env}) as server,
        new_page(server.url, wav) as bp,
    ):
        declaring_door_tool(bp)
        yield bp
    server_log_is_clean(server)


def test_a_client_tool_call_is_shown_and_left_to_its_client(
    new_page: NewPage, tmp_path: Path
) -> None:
    """The model calls a tool of the client's: the page marks it as a client tool, sends no
    answer, shows the server's timeout as the call's error, and the turn still ends with a
    played reply."""
    with door_tool_page(new_page, tmp_path, client_timeout_s=1) as bp:
        bp.hold_talk(0.8)
        wait_turn_played(bp, 1, timeout=20)

        (call,) = bp.received("tool.call", turn=1)
        assert (call["name"], call["runs_on"]) == ("door_state", "client"), call
        (cancelled,) = bp.received("tool.cancelled", turn=1)
        (result,) = bp.received("tool.result", turn=1)
        assert cancelled["call_id"] == result["call_id"] == call["call_id"]
        assert result["ok"] is False, result
        assert "did not answer" in result["error"], result
        # Shown, never answered.
        assert not bp.sockets.messages("tool.result"), bp.sockets.sent

        (record,) = bp.hook("toolCalls")
        assert (record["runs_on"], record["status"]) == ("client", "failed"), record
        (shown,) = shown_calls(bp, 1)
        assert (shown["status"], shown["runsOn"]) == ("failed", "client"), shown
        assert "client tool" in shown["text"], shown
        assert "failed" in shown["text"], shown
        assert "did not answer" in (shown["result"] or ""), shown
        assert '"front"' in shown["args"], shown
        reply = bp.page.locator("#reply").inner_text().strip()
        assert reply.startswith("I could not check the door"), reply
        bp.finish()


def test_a_call_stopped_while_acting_shows_as_cancelled(new_page: NewPage, tmp_path: Path) -> None:
    """Esc while the client tool is awaited: the page cancels the turn, the server cancels the
    call, and the page shows the call as cancelled (in words) and the turn as stopped."""
    with door_tool_page(new_page, tmp_path, client_timeout_s=30) as bp:
        bp.hold_talk(0.8)
        bp.wait_for(
            "voiceFsm.state === 'acting' && voiceFsm.toolCalls.length === 1",
            "the model called the client tool",
        )
        bp.page.keyboard.press("Escape")
        bp.wait_for("voiceFsm.state === 'idle'", "the turn was cancelled")

        assert len(bp.sent("response.cancel")) == 1
        (call,) = bp.received("tool.call", turn=1)
        (cancelled,) = bp.received("tool.cancelled", turn=1)
        assert cancelled["call_id"] == call["call_id"]
        assert not bp.sockets.events("tool.result"), "a cancelled call has no result"
        assert not bp.sockets.messages("tool.result"), bp.sockets.sent

        (record,) = bp.hook("toolCalls")
        assert record["status"] == "cancelled", record
        (shown,) = shown_calls(bp, 1)
        assert shown["status"] == "cancelled", shown
        assert "cancelled" in shown["text"], shown
        assert shown["result"] is None, shown
        turn = bp.page.locator('#conversation .turn[data-turn="1"]')
        assert turn.get_attribute("data-status") == "cancelled"
        bp.finish()
