"""Shared by every test module.

pytest puts this folder on sys.path, so tests import session_harness and support directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from voice_fsm.providers import Pipeline
from voice_fsm.session import Session
from voice_fsm.settings import Settings
from voice_fsm.testing.fake_realtime import FakeRealtimeConfig, running_fake_realtime

from session_harness import Client, fake_pipeline, make_settings

ClientFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def realtime_server() -> Iterator[tuple[FakeRealtimeConfig, str]]:
    """The fake Realtime server on a loopback port: its config and base URL (ending in /v1).

    One server for the whole run: each test resets the config (`FakeRealtimeConfig.reset`).
    """
    config = FakeRealtimeConfig()
    with running_fake_realtime(config) as base_url:
        yield config, base_url


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    """Opens sessions as a WebSocket client would: `await connect(pipeline, settings)`."""
    clients: list[Client] = []

    async def make(pipeline: Pipeline | None = None, settings: Settings | None = None) -> Client:
        holder: list[Client] = []

        async def send(event: Any) -> None:
            await holder[0].receive(event)

        session = Session(pipeline or fake_pipeline(), settings or make_settings(), send)
        client = Client(session)
        holder.append(client)
        client.task = asyncio.create_task(session.run())
        await client.until("session.created")
        clients.append(client)
        return client

    yield make
    for client in clients:
        assert client.task is not None
        client.task.cancel()
        await asyncio.gather(client.task, return_exceptions=True)
