"""The built-in dashboard (/dashboard) in real Chromium, against a real `voice-fsm serve`.

Turns are made with `voice-fsm talk` (fake providers), the page is opened once and never
reloaded, and what it shows is checked against `voice-fsm latency --json` over the same
server's JSON log: the p50/p95/p99 of each stage, the outcomes and the error codes.

The test also saves a 1200x800 screenshot to artifacts/browser/; with UPDATE_DOCS_SCREENSHOT=1
it is written to docs/dashboard.png (the README's picture) instead.

Chromium or Playwright missing: skipped, except under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from conftest import NewPage
from support.browser import ARTIFACTS, REPO, BrowserPage, serving, tone_pcm, write_wav
from support.servers import clean_env, console_script, fake_env, run_talk

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Questions in seconds; 0.05 s is under the 100 ms a recording needs: that turn fails (no-audio).
QUESTIONS = (0.5, 0.7, 0.4, 0.05)
DOCS_SCREENSHOT = REPO / "docs" / "dashboard.png"


def talk(workdir: Path, url: str, seconds: float) -> dict[str, Any]:
    """One turn with `voice-fsm talk --json`: its output (the session, and the error if any)."""
    done = run_talk(workdir, url, seconds=seconds)
    result: dict[str, Any] = json.loads(done.stdout)
    if seconds >= 0.1:
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        assert done.returncode != 0, done.stdout
        assert result["error"]["code"] == "no-audio", result
    return result


def latency_cli(log: Path) -> dict[str, Any]:
    """`voice-fsm latency --json` over the server's log, as an operator would run it."""
    done = subprocess.run(
        [console_script(), "latency", "--json", str(log)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def shown_turns(bp: BrowserPage, count: int) -> list[dict[str, str]]:
    """Wait until the page lists `count` turns (without reloading it); the rows it shows."""
    bp.wait_for(
        "document.querySelectorAll('#recent tbody tr[data-turn]').length === arg"
        " && voiceFsmDashboard.snapshot.finished === arg",
        f"the dashboard lists {count} turns",
        arg=count,
        timeout=10,
    )
    rows: list[dict[str, str]] = bp.page.eval_on_selector_all(
        "#recent tbody tr[data-turn]",
        "(rows) => rows.map((r) => ({...r.dataset, text: r.textContent}))",
    )
    return rows


def shown_figures(bp: BrowserPage) -> dict[str, Any]:
    """The page's percentile cells, outcomes and error codes, as it shows them."""
    figures: dict[str, Any] = bp.page.evaluate(
        """() => {
            const cells = [...document.querySelectorAll('#percentiles td[data-p]')];
            const counted = (sel, key) => Object.fromEntries([...document.querySelectorAll(sel)]
                .map((li) => [li.dataset[key], Number(li.dataset.count)]));
            return {
                cells: cells.map((c) => ({stage: c.dataset.stage, p: c.dataset.p,
                                          value: c.dataset.value, text: c.textContent})),
                outcomes: counted('#outcomes li[data-outcome]', 'outcome'),
                codes: counted('#error-codes li[data-code]', 'code'),
                v2vTile: document.querySelector('#tile-v2v-p50').dataset.value,
            };
        }"""
    )
    return figures


def set_hidden(bp: BrowserPage, hidden: bool) -> None:
    """What the page sees when its tab is hidden or shown again (headless, it never is)."""
    bp.page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        hidden,
    )


def assert_agrees_with_the_cli(bp: BrowserPage, log: Path, turns: int) -> dict[str, Any]:
    report = latency_cli(log)
    summary = report["summary"]
    assert summary["turns"] == turns, report
    shown = shown_figures(bp)
    by_cell = {(c["stage"], int(c["p"])): c for c in shown["cells"]}
    assert {stage for stage, _ in by_cell} == set(summary["stages"])
    for stage, figures in summary["stages"].items():
        for p in (50, 95, 99):
            cell = by_cell[(stage, p)]
            expected = figures[f"p{p}"]
            assert expected is not None, (stage, figures)  # every ok turn runs every stage
            assert float(cell["value"]) == expected, (stage, p, cell, figures)
            assert cell["text"] == f"{round(expected)} ms", (stage, p, cell)
    assert float(shown["v2vTile"]) == summary["stages"]["voice_to_voice_ms"]["p50"]
    assert shown["outcomes"] == summary["outcomes"]
    assert shown["codes"] == summary["error_codes"]
    return summary


def test_the_dashboard_shows_the_servers_turns_live_as_voice_fsm_latency_counts_them(
    new_page: NewPage, tmp_path: Path
) -> None:
    env = fake_env()
    microphone = write_wav(tmp_path / "unused.wav", tone_pcm(0.2))  # the page never listens
    with serving(tmp_path, env) as server:
        ws_url = f"ws://127.0.0.1:{server.port}/ws"
        sessions = [talk(tmp_path, ws_url, seconds)["session_id"] for seconds in QUESTIONS]
        with new_page(f"{server.url}dashboard", microphone) as bp:
            rows = shown_turns(bp, len(QUESTIONS))
            # The turns made here, newest first, the failed one with its code.
            assert [r["session"] for r in rows] == sessions[::-1]
            assert [r["outcome"] for r in rows] == ["error", "ok", "ok", "ok"]
            assert "no-audio" in rows[0]["text"]
            summary = assert_agrees_with_the_cli(bp, server.log, len(QUESTIONS))
            assert summary["outcomes"] == {"error": 1, "ok": 3}
            assert summary["error_codes"] == {"no-audio": 1}

            # Live: a new turn and a live session show up without a reload.
            bp.page.evaluate("window.notReloaded = true")
            polls = bp.page.evaluate("voiceFsmDashboard.polls")
            sessions.append(talk(tmp_path, ws_url, 0.6)["session_id"])
            rows = shown_turns(bp, len(QUESTIONS) + 1)
            assert rows[0]["session"] == sessions[-1]
            assert rows[0]["outcome"] == "ok"
            summary = assert_agrees_with_the_cli(bp, server.log, len(QUESTIONS) + 1)
            assert summary["outcomes"] == {"error": 1, "ok": 4}
            with connect(ws_url):
                bp.wait_for(
                    "document.querySelector('#sessions li[data-state=idle]').dataset.count === '1'"
                    " && document.querySelector('#tile-sessions').dataset.count === '1'",
                    "the page shows one idle live session",
                )
            bp.wait_for(
                "document.querySelector('#tile-sessions').dataset.count === '0'",
                "the page shows no live session once it closed",
            )
            assert bp.page.evaluate("window.notReloaded === true")
            assert bp.page.evaluate("voiceFsmDashboard.polls") > polls
            assert bp.page.eval_on_selector("#connection", "e => e.dataset.status") == "open"
            # Every chart drew a point per turn that ran its stage.
            charted = bp.page.eval_on_selector_all(
                "#charts figure[data-stage]",
                "(figs) => figs.map((f) => [f.dataset.stage, Number(f.dataset.points),"
                " f.querySelectorAll('circle.dash-dot').length])",
            )
            assert {stage: (points, dots) for stage, points, dots in charted} == {
                stage: (4, 4) for stage in summary["stages"]
            }

            # Hidden, the page stops asking; shown again, it asks at once.
            set_hidden(bp, True)
            bp.wait_for("voiceFsmDashboard.status === 'paused'", "the hidden page pauses")
            paused_at = bp.page.evaluate("voiceFsmDashboard.polls")
            bp.pause(4.5)  # two polling periods and more
            assert bp.page.evaluate("voiceFsmDashboard.polls") == paused_at
            set_hidden(bp, False)
            bp.wait_for(
                "voiceFsmDashboard.polls > arg && voiceFsmDashboard.status === 'open'",
                "the page polls again once visible",
                arg=paused_at,
                timeout=1.5,
            )

            bp.page.set_viewport_size({"width": 1200, "height": 800})
            bp.page.evaluate("window.scrollTo(0, 0)")
            picture = (
                DOCS_SCREENSHOT
                if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
                else ARTIFACTS / "dashboard-1200x800.png"
            )
            picture.parent.mkdir(parents=True, exist_ok=True)
            bp.page.screenshot(path=str(picture))
            bp.finish()
