"""Shared by every test module.

pytest puts this folder on sys.path, so tests import session_harness and support directly.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pytest

from voice_fsm.adapters.openai.client import make_openai_client
from voice_fsm.adapters.openai.llm import OpenAILanguageModel
from voice_fsm.adapters.openai.realtime_stt import OpenAIRealtimeSpeechToText
from voice_fsm.providers import Pipeline
from voice_fsm.session import Session
from voice_fsm.settings import Settings
from voice_fsm.testing.fake_openai import FakeOpenAIConfig, running_fake_openai
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig, running_fake_realtime

from session_harness import Client, fake_pipeline, make_settings
from support.browser import BrowserPage, find_chromium, import_playwright, launched_page
from support.loop_errors import UnretrievedExceptions
from support.openai_wire import openai_settings
from support.skip_summary import pytest_terminal_summary as pytest_terminal_summary

ClientFactory = Callable[..., Any]
NewPage = Callable[..., AbstractContextManager[BrowserPage]]
REALTIME_KEY = "sk-proj-live0123456789abcdef"
EXPECT_UNRETRIEVED = "expect_unretrieved"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{EXPECT_UNRETRIEVED}: the test leaks a task exception on purpose (the check's self-test)",
    )


@pytest.fixture(scope="module", autouse=True)
def no_unretrieved_exceptions_in_module() -> Iterator[UnretrievedExceptions]:
    """What a full garbage collection finds after a module's tests (tasks kept alive by a
    reference cycle until then) and no test's own check saw: an error on its last test."""
    with UnretrievedExceptions(generation=2) as caught:
        yield caught
    if caught.reports:
        pytest.fail(
            "asyncio reported an exception nobody retrieved, in a test of this module:\n"
            + "\n".join(caught.reports)
        )


@pytest.fixture(autouse=True)
def no_unretrieved_exceptions(
    request: pytest.FixtureRequest, no_unretrieved_exceptions_in_module: UnretrievedExceptions
) -> Iterator[None]:
    """Fail a test during which asyncio reported "Task exception was never retrieved" (or the
    same of a future): an error, or a worker's cancellation, that nobody looked at."""
    in_module = no_unretrieved_exceptions_in_module
    with UnretrievedExceptions(generation=1) as caught:
        yield
    in_module.reports = [r for r in in_module.reports if r not in caught.reports]
    expected = request.node.get_closest_marker(EXPECT_UNRETRIEVED) is not None
    if expected and not caught.reports:
        pytest.fail("the test leaked a task exception, but no report of it was caught")
    if caught.reports and not expected:
        pytest.fail("asyncio reported an exception nobody retrieved:\n" + "\n".join(caught.reports))


@pytest.fixture
def fake_openai() -> Iterator[tuple[FakeOpenAIConfig, str]]:
    """A fake OpenAI HTTP API on a loopback port, answering at once: config and base URL."""
    config = FakeOpenAIConfig(llm_first_token_delay=0.0, llm_token_delay=0.0)
    with running_fake_openai(config) as base_url:
        yield config, base_url


@pytest.fixture
async def make_openai_llm() -> AsyncIterator[Callable[[str], OpenAILanguageModel]]:
    """Makes `OpenAILanguageModel` adapters (no retries) for a base URL; closed after the test."""
    made: list[OpenAILanguageModel] = []

    def make(base_url: str) -> OpenAILanguageModel:
        settings = openai_settings("llm", base_url=base_url)
        llm = OpenAILanguageModel(settings.llm, make_openai_client(settings, settings.llm))
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


@pytest.fixture(scope="session")
def realtime_server() -> Iterator[tuple[FakeRealtimeConfig, str]]:
    """The fake Realtime server on a loopback port: its config and base URL (ending in /v1).

    One server for the whole run: each test resets the config (`FakeRealtimeConfig.reset`).
    """
    config = FakeRealtimeConfig()
    with running_fake_realtime(config) as base_url:
        yield config, base_url


@pytest.fixture
def realtime(realtime_server: tuple[FakeRealtimeConfig, str]) -> FakeRealtimeConfig:
    """The fake Realtime server, reset for transcription: `REALTIME_KEY` only, quick words."""
    realtime_server[0].reset(api_key=REALTIME_KEY, delta_every_ms=100, transcription_delay=0.05)
    return realtime_server[0]


@pytest.fixture
async def make_realtime_stt(
    realtime_server: tuple[FakeRealtimeConfig, str], realtime: FakeRealtimeConfig
) -> AsyncIterator[Callable[..., OpenAIRealtimeSpeechToText]]:
    """Makes `OpenAIRealtimeSpeechToText` adapters against the fake; closed after the test."""
    made: list[OpenAIRealtimeSpeechToText] = []

    def make(
        base_url: str | None = None, key: str = REALTIME_KEY, timeout: float = 2.0, **options: Any
    ) -> OpenAIRealtimeSpeechToText:
        settings = openai_settings(
            "stt", base_url=base_url or realtime_server[1], key=key, timeout=timeout, language="en"
        )
        client = make_openai_client(settings, settings.stt)
        stt = OpenAIRealtimeSpeechToText(settings.stt, client, settings.secrets(), **options)
        made.append(stt)
        return stt

    yield make
    for stt in made:
        await stt.aclose()


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    """Opens sessions as a WebSocket client would: `await connect(pipeline, settings)`."""
    clients: list[Client] = []

    async def make(
        pipeline: Pipeline | None = None,
        settings: Settings | None = None,
        observers: Sequence[Any] = (),
    ) -> Client:
        holder: list[Client] = []

        async def send(event: Any) -> None:
            await holder[0].receive(event)

        session = Session(
            pipeline or fake_pipeline(), settings or make_settings(), send, observers=observers
        )
        client = Client(session)
        holder.append(client)
        record_trigger_callers(session, callers.setdefault(id(session), []))
        client.task = asyncio.create_task(session.run())
        await client.until("session.created")
        clients.append(client)
        return client

    callers: dict[int, list[asyncio.Task[Any] | None]] = {}
    yield make
    for client in clients:
        assert client.task is not None
        client.task.cancel()
        await asyncio.gather(client.task, return_exceptions=True)
        # Every session test checks it: only the session's driver task moves its machine.
        fired_by = callers[id(client.session)]
        assert all(task is client.task for task in fired_by), "a trigger fired off the driver"


def record_trigger_callers(session: Session, into: list[asyncio.Task[Any] | None]) -> None:
    """Wrap each of the session machine's triggers to note which task fires it."""
    for event in session.machine.events.values():
        original = event.trigger

        async def trigger(model: Any, *args: Any, _original: Any = original, **kw: Any) -> Any:
            into.append(asyncio.current_task())
            return await _original(model, *args, **kw)

        event.trigger = trigger  # type: ignore[method-assign]


# ---------------------------------------------------------------- real Chromium


@pytest.fixture(scope="session")
def chromium() -> str:
    return find_chromium()


@pytest.fixture(scope="module")
def pw(chromium: str) -> Iterator[Any]:
    """Playwright's sync API, one per browser test module: while it is alive the main thread
    has an asyncio loop marked as running, which other modules' async tests must not meet."""
    sync_api = import_playwright()
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture
def new_page(pw: Any, chromium: str, request: pytest.FixtureRequest) -> NewPage:
    """`new_page(url, microphone_wav, ...)`: a fresh Chromium on the page (see launched_page)."""
    return functools.partial(launched_page, pw, chromium=chromium, name=request.node.name)
