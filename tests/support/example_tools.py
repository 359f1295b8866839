"""Functions the tool tests load by path (support.example_tools:<name>), good and bad."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

NOT_A_FUNCTION = 42


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    This paragraph is for people reading the code, not for the model.
    """
    return a + b


async def greet(name: str, excited: bool = False) -> str:
    """Greet someone by name."""
    await asyncio.sleep(0)
    return f"Hello, {name}{'!' if excited else '.'}"


def which_thread() -> dict[str, int]:
    """Say which thread runs the tool."""
    return {"thread": threading.get_ident()}


def weather(
    city: Annotated[str, Field(description="the city's name")],
    unit: Literal["celsius", "fahrenheit"] = "celsius",
    days: int | None = None,
    hours: list[int] = [],  # noqa: B006 (pydantic copies defaults; the schema shows it)
    wind: float = 0.5,
) -> dict[str, object]:
    """Get the weather forecast for a city.

    Args:
        city: ignored, the annotation's description wins.
        days: how many days ahead,
            from 1 to 7.
    """
    return {"city": city, "unit": unit, "days": days, "hours": hours, "wind": wind}


def explode() -> None:
    """Always fails."""
    raise RuntimeError("the weather service is down")


def socket_timeout() -> None:
    """Fails with a timeout of its own, not the toolbox's."""
    raise TimeoutError("read timed out")


def not_json() -> object:
    """Returns something that is not JSON."""
    return object()


def not_a_number() -> float:
    """Returns NaN, which JSON cannot carry."""
    return math.nan


def text_of(length: int) -> str:
    """Returns a text of the given length."""
    return "x" * length


def no_hint(x) -> int:  # type: ignore[no-untyped-def]
    """Has a parameter without a type hint."""
    return 1


def star_args(*numbers: int) -> int:
    """Takes *args."""
    return sum(numbers)


def star_kwargs(**options: str) -> int:
    """Takes **kwargs."""
    return len(options)


def takes_callback(callback: Callable[[], None]) -> None:
    """Has a parameter pydantic cannot put in a JSON Schema."""


class Opaque:
    pass


def takes_opaque(thing: Opaque) -> None:
    """Has a parameter of a type pydantic knows nothing about."""


def no_docstring(x: int) -> int:
    return x
