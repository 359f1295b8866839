"""Python tools for the integration tests of tool calls, loaded by the server under test as
VOICE_FSM_TOOLS__FUNCTIONS=support.tool_functions:<name> (with tests/ on its PYTHONPATH).

Each stands for a kind of tool a user writes: a plain sync one, slow and quick async ones, and
the ones that go wrong in each way the toolbox must survive."""

from __future__ import annotations

import asyncio

SLOW_S = 2.0
QUICK_S = 0.1
ESSAY_CHARS = 10_000


def weather_text(city: str) -> str:
    return f"Sunny and 21 degrees in {city}."


def get_weather(city: str) -> str:
    """The weather now in a city."""
    return weather_text(city)


async def slow_weather(city: str) -> str:
    """The weather in a city, from a slow service."""
    await asyncio.sleep(SLOW_S)
    return weather_text(city)


async def quick_weather(city: str) -> str:
    """The weather in a city, from a quick service."""
    await asyncio.sleep(QUICK_S)
    return weather_text(city)


def broken_weather(city: str) -> str:
    """The weather in a city, from a service that is down."""
    raise RuntimeError(f"the weather service for {city} is down")


def weather_object(city: str) -> object:
    """The weather in a city, as an object JSON cannot carry."""
    return object()


def weather_essay(city: str) -> str:
    """The weather in a city, at far too great a length."""
    sentence = weather_text(city) + " "
    return (sentence * (ESSAY_CHARS // len(sentence) + 1))[:ESSAY_CHARS]
