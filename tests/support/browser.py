"""The web page in a real browser: Debian's Chromium driven by Playwright's sync API.

Chromium captures a WAV file as its microphone (a launch flag, so every test launches its own
browser), the page streams it to a real server, and the reply is played by Web Audio. See
/work/shared/docs/browser-testing.md for the flags and what is worth asserting.

Here: finding Chromium and Playwright (a test skips without them, except under CI=true, where
it fails: CI must run these tests), starting `voice-fsm serve`, microphone WAVs, and a launched
page with its WebSocket frames, page errors, waits, hold-to-talk and screenshot.
"""

from __future__ import annotations

import json
import os
import re
import time
import wave
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from voice_fsm.adapters.local.packages import local_engines_installed
from voice_fsm.audio import pcm_to_wav
from voice_fsm.testing import FakeOpenAIConfig

from support.servers import (
    clean_env,
    console_script,
    find_debian_program,
    free_port,
    running_server,
    skip_or_fail,
)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"
DEBIAN_CHROMIUM = "/usr/bin/chromium"
KEY = "sk-test-browser"  # the fake OpenAI server accepts this key only

# The flags of browser-testing.md; the fake capture file is added per launch.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)

# The hooks of `window.voiceFsm` the tests read (the page's test contract).
HOOKS = (
    "scheduledSamples",
    "playedSamples",
    "playedMs",
    "activeSources",
    "state",
    "stateHistory",
    "events",
    "connection",
    "sessionId",
    "turn",
    "lastPlayedMs",
    "lastMetrics",
    "lastError",
    "sentAudioBytes",
    "receivedAudioBytes",
    "reconnects",
)


def find_chromium() -> str:
    """The path of Debian's Chromium, or skip (fail under CI=true) when it is not installed."""
    return find_debian_program("chromium")


def import_playwright() -> ModuleType:
    """playwright.sync_api, or skip (fail under CI=true) when it cannot be imported."""
    try:
        import playwright.sync_api as sync_api
    except ImportError as err:
        skip_or_fail(f"playwright cannot be imported ({err}): pip install -e '.[test]'")
        raise  # unreachable: skip_or_fail raises
    return sync_api


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    process: Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextmanager
def serving(
    workdir: Path, env: dict[str, str], *, port: int | None = None, name: str = "server"
) -> Iterator[Server]:
    """`voice-fsm serve` as a user starts it, on `port` (a free one by default)."""
    port = port or free_port()
    log = workdir / f"{name}.log"
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=workdir,
        log=log,
        timeout=60,
    ) as process:
        yield Server(process, port, log)


def openai_env(base_url: str) -> dict[str, str]:
    """The real OpenAI adapters against the fake, without the SDK's retries (fast failures)."""
    return clean_env(
        OPENAI_API_KEY=KEY,
        OPENAI_BASE_URL=base_url,
        VOICE_FSM_STT__MAX_RETRIES="0",
        VOICE_FSM_LLM__MAX_RETRIES="0",
        VOICE_FSM_TTS__MAX_RETRIES="0",
    )


def quick_fake(**overrides: Any) -> FakeOpenAIConfig:
    """A fake OpenAI server config with short latencies (tens of ms), `overrides` on top."""
    settings: dict[str, Any] = {
        "api_key": KEY,
        "stt_delay": 0.02,
        "llm_first_token_delay": 0.02,
        "llm_token_delay": 0.005,
        "tts_first_audio_delay": 0.02,
        "tts_chunk_delay": 0.005,
    }
    return FakeOpenAIConfig(**{**settings, **overrides})


def use_local_engines() -> bool:
    """The embedded engines when installed; CI must have them (CI=true without them fails)."""
    if local_engines_installed():
        return True
    if os.environ.get("CI") == "true":
        pytest.fail("the embedded engines are not installed; CI must run the page with them")
    return False


# ---------------------------------------------------------------- microphone files


def write_wav(path: Path, pcm: bytes, sample_rate: int = 24_000) -> Path:
    """Write PCM16 LE mono as a WAV file; returns its absolute path."""
    path.write_bytes(pcm_to_wav(pcm, sample_rate))
    return path.resolve()


def tone_pcm(seconds: float, frequency: float = 300.0, sample_rate: int = 24_000) -> bytes:
    """A sine tone as PCM16 LE mono: the fake speech-to-text transcribes anything."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    # A little vibrato and a pulse, so the capture's noise suppression sees no steady tone.
    samples = 0.3 * np.sin(2 * np.pi * frequency * t + 2 * np.sin(2 * np.pi * 5 * t))
    samples *= 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2 * t))
    return (samples * 32767).astype("<i2").tobytes()


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


# ---------------------------------------------------------------- what the page did


@dataclass
class SocketLog:
    """The JSON frames the page's WebSockets sent and received, in order; the audio it sent
    (all of it) and received (counted)."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    sent_audio: bytearray = field(default_factory=bytearray)  # the microphone, as sent
    received_audio_bytes: int = 0
    sockets: int = 0

    def attach(self, ws: Any) -> None:
        self.sockets += 1
        ws.on("framesent", self._on_sent)
        ws.on("framereceived", self._on_received)

    def _on_sent(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.sent_audio += payload
        else:
            self.sent.append(json.loads(payload))

    def _on_received(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            self.received_audio_bytes += len(payload)
        else:
            self.received.append(json.loads(payload))

    def events(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """Received events of type `kind` whose fields equal `match`."""
        return [
            e
            for e in self.received
            if e.get("type") == kind and all(e.get(k) == v for k, v in match.items())
        ]

    def messages(self, kind: str) -> list[dict[str, Any]]:
        """Sent messages of type `kind`."""
        return [m for m in self.sent if m.get("type") == kind]

    @property
    def sent_audio_bytes(self) -> int:
        return len(self.sent_audio)


@dataclass
class PageProblems:
    """Uncaught page errors and console errors; `allowed` patterns are expected console errors."""

    allowed: Sequence[re.Pattern[str]] = ()
    errors: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = f"console.error: {message.text} ({message.location.get('url', '')})"
        if any(pattern.search(message.text) for pattern in self.allowed):
            self.tolerated.append(text)
        else:
            self.errors.append(text)

    def on_crash(self, _page: Any) -> None:
        self.errors.append("the page crashed")


class BrowserPage:
    """One browser with one page of the app, and what it logged."""

    def __init__(self, page: Any, sockets: SocketLog, problems: PageProblems, name: str) -> None:
        self.page = page
        self.sockets = sockets
        self.problems = problems
        self.name = name
        self.screenshot: Path | None = None

    # -- reading the page

    def hooks(self) -> dict[str, Any]:
        """A snapshot of `window.voiceFsm` (getters included)."""
        snapshot: dict[str, Any] = self.page.evaluate(
            """(names) => {
                const hooks = window.voiceFsm;
                if (!hooks) return {missing: 'window.voiceFsm'};
                const out = {};
                for (const name of names) {
                    const value = hooks[name];
                    out[name] = typeof value === 'function' ? 'function' : value;
                }
                return JSON.parse(JSON.stringify(out));
            }""",
            list(HOOKS),
        )
        return snapshot

    def hook(self, name: str) -> Any:
        return self.page.evaluate("(name) => window.voiceFsm[name]", name)

    def require_hooks(self, names: Iterable[str] = HOOKS) -> None:
        """Fail with the exact names when `window.voiceFsm` lacks hooks of the contract."""
        missing = self.page.evaluate(
            "(names) => window.voiceFsm ? names.filter((n) => !(n in window.voiceFsm)) : names",
            list(names),
        )
        assert not missing, f"window.voiceFsm lacks the hooks {missing} (the page's test contract)"

    def describe(self) -> str:
        """What the page shows, for failure messages."""
        try:
            hooks = self.hooks()
            shown = self.page.evaluate(
                """() => {
                    const text = (sel) => { const e = document.querySelector(sel);
                        return e ? e.textContent.trim() : null; };
                    const error = document.querySelector('#error');
                    return {state: text('#state'), transcript: text('#transcript'),
                            reply: text('#reply'), metrics: text('#metrics'),
                            error: error && !error.hidden ? error.textContent.trim() : null,
                            connection: document.querySelector('#connection')?.dataset.status};
                }"""
            )
        except Exception as err:  # the page may be gone; the description is best effort
            return f"(the page could not be read: {err})"
        if isinstance(hooks.get("events"), list):
            hooks["events"] = ["…", *hooks["events"][-15:]]
        events = [e.get("type") for e in self.sockets.received][-25:]
        problems = "\n".join(self.problems.errors) or "none"
        return (
            f"page: {shown}\nvoiceFsm: {hooks}\nlast server events: {events}\n"
            f"page errors: {problems}"
        )

    # -- waiting

    def wait_for(
        self, expression: str, what: str, *, timeout: float = 10.0, arg: Any = None, poll: Any = 20
    ) -> Any:
        """Wait until the JS `expression` is truthy (its value is returned); fail saying `what`."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            handle = self.page.wait_for_function(
                f"(arg) => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }}",
                arg=arg,
                timeout=timeout * 1000,
                polling=poll,
            )
        except PlaywrightTimeout:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}\n{self.describe()}")
        return handle.json_value()

    def received(
        self, kind: str, *, count: int = 1, timeout: float = 3.0, **match: Any
    ) -> list[dict[str, Any]]:
        """The server events of type `kind` matching `match`, once at least `count` arrived.

        Playwright reports frames as events of their own, which may reach this process a
        little after the page has acted on them: wait for them rather than read at once.
        """
        return self._frames(lambda: self.sockets.events(kind, **match), count, timeout, kind)

    def sent(self, kind: str, *, count: int = 1, timeout: float = 3.0) -> list[dict[str, Any]]:
        """The JSON messages of type `kind` the page sent, once at least `count` were."""
        return self._frames(lambda: self.sockets.messages(kind), count, timeout, f"sent {kind}")

    def _frames(
        self, find: Callable[[], list[dict[str, Any]]], count: int, timeout: float, what: str
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := find()) < count:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{len(found)} WebSocket frames {what} after {timeout:g} s, expected "
                    f"{count}: {found}\n{self.describe()}"
                )
            self.pause(0.02)
        return found

    def pause(self, seconds: float) -> None:
        """Sleep while Playwright keeps dispatching events (time.sleep would hold them back)."""
        self.page.wait_for_timeout(seconds * 1000)

    # -- acting

    def wait_connected(self, timeout: float = 10.0) -> None:
        self.wait_for(
            "document.querySelector('#connection').dataset.status === 'open'"
            " && !document.querySelector('#talk').disabled && voiceFsm.connection === 'open'",
            "the page is connected (#connection[data-status=open], voiceFsm.connection) and"
            " #talk is enabled",
            timeout=timeout,
        )

    def press_talk(self) -> None:
        """Hover #talk and press the mouse button on it (the page's hold to talk)."""
        self.page.hover("#talk")
        self.page.mouse.down()

    def release_talk(self) -> None:
        self.page.mouse.up()

    def hold_talk(self, seconds: float) -> float:
        """Hold #talk for `seconds`, then release; returns how long it was held (s)."""
        self.press_talk()
        start = time.monotonic()
        self.pause(seconds)
        self.release_talk()
        return time.monotonic() - start

    # -- ending

    def save_screenshot(self) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.screenshot = path
        return path

    def finish(self) -> None:
        """Save the final screenshot and assert the page logged no errors."""
        path = self.save_screenshot()
        assert path.stat().st_size > 0
        assert not self.problems.errors, "the page logged errors:\n" + "\n".join(
            self.problems.errors
        )


@contextmanager
def launched_page(
    playwright: Any,
    url: str,
    microphone: Path,
    *,
    chromium: str,
    name: str,
    loop: bool = False,
    allowed_console_errors: Sequence[str] = (),
) -> Iterator[BrowserPage]:
    """Launch a headless Chromium whose microphone plays `microphone`, open `url` in it.

    The WAV plays from the page's getUserMedia on, once (`%noloop`) unless `loop`. On leaving,
    a screenshot is saved if the test did not save one (a failed test's last look), and the
    browser is closed.
    """
    capture = str(microphone.resolve()) + ("" if loop else "%noloop")
    browser = playwright.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={capture}"],
    )
    try:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        problems = PageProblems(allowed=[re.compile(p) for p in allowed_console_errors])
        sockets = SocketLog()
        page.on("pageerror", problems.on_page_error)
        page.on("console", problems.on_console)
        page.on("crash", problems.on_crash)
        page.on("websocket", sockets.attach)
        page.set_default_timeout(10_000)
        page.goto(url)
        opened = BrowserPage(page, sockets, problems, name)
        try:
            yield opened
        finally:
            if opened.screenshot is None:
                with suppress(Exception):  # the last look of a failed test, if there is one
                    opened.save_screenshot()
    finally:
        browser.close()


def is_subsequence(wanted: Sequence[str], seen: Sequence[str]) -> bool:
    """Whether `wanted` appears in `seen` in order (not necessarily next to each other)."""
    it = iter(seen)
    return all(any(item == s for s in it) for item in wanted)
