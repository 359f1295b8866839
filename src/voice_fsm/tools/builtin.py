"""The built-in tools: a clock and a calculator, the two things a small language model gets
wrong on its own (it has no clock, and it guesses at arithmetic)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from voice_fsm.tools.calls import ServerTool, ToolFailure
from voice_fsm.tools.functions import ToolConfigError, function_tool

TIMEZONE_SETTING = "VOICE_FSM_TOOLS__TIMEZONE"
MAX_EXPRESSION_CHARS = 200
MAX_MAGNITUDE = 10**100  # any operand or result beyond this is refused, so no step is slow
SIGNIFICANT_DIGITS = 12  # 0.1 + 0.2 reads 0.3, not 0.30000000000000004

Number = int | float
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
# What models write for operators Python spells differently ("2^10" means a power to them).
_SPELLINGS = {"^": "**", "\u00d7": "*", "\u00f7": "/", "\u2212": "-"}  # x, divide, minus
_ALLOWED = "numbers, + - * / // % ** and parentheses"


def builtin_tools(timezone: str | None) -> list[ServerTool]:
    """The clock (in `timezone`, an IANA name; None: the machine's zone) and the calculator.
    `ToolConfigError` for an unknown zone."""
    zone = _zone(timezone)

    def clock() -> dict[str, str]:
        return now_in(zone, timezone)

    return [
        function_tool(
            clock,
            name="clock",
            description="Get the current date, weekday and time.",
            source="builtin",
        ),
        function_tool(
            calculator,
            description="Evaluate an arithmetic expression such as 17 * 23.",
            source="builtin",
        ),
    ]


def now_in(zone: tzinfo | None, label: str | None = None) -> dict[str, str]:
    """The clock's answer: the parts a small model reads right, each on its own."""
    now = datetime.now(zone).astimezone(zone)
    return {
        "date": now.strftime("%Y-%m-%d"),
        "weekday": now.strftime("%A"),
        "time": now.strftime("%H:%M"),
        "timezone": label or now.tzname() or "local",
    }


def calculator(
    expression: Annotated[
        str, Field(description="the expression, with numbers, + - * / % ** and parentheses")
    ],
) -> dict[str, Any]:
    """Evaluate an arithmetic expression such as 17 * 23."""
    return {"expression": expression, "result": evaluate(expression)}


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression, computed by walking its syntax tree (never
    eval). `ToolFailure` for anything else, a division by zero or a number too large."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolFailure(
            "invalid-arguments", f"the expression is longer than {MAX_EXPRESSION_CHARS} characters"
        )
    text = expression
    for spelled, python in _SPELLINGS.items():
        text = text.replace(spelled, python)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolFailure(
            "invalid-arguments", f"{expression!r} is not an arithmetic expression"
        ) from None
    try:
        value = _walk(tree.body)
    except ZeroDivisionError:
        raise ToolFailure("failed", "division by zero") from None
    except OverflowError:
        raise ToolFailure("failed", "the result is too large") from None
    except RecursionError:
        raise ToolFailure("invalid-arguments", "the expression is nested too deeply") from None
    return _tidy(value)


def _walk(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolFailure("invalid-arguments", f"only {_ALLOWED} are allowed: {value!r}")
        return _bounded(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_walk(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    raise ToolFailure("invalid-arguments", f"only {_ALLOWED} are allowed, not {_describe(node)}")


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power whose result would be too large before computing it: an integer power
    is exact and 2 ** 10**9 would run for minutes."""
    if abs(base) <= 1 or exponent <= 0:
        return
    if exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise OverflowError


def _bounded(value: Any) -> Number:
    if isinstance(value, complex):  # (-8) ** 0.5
        raise ToolFailure("failed", "the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise OverflowError
    if abs(value) > MAX_MAGNITUDE:
        raise OverflowError
    return value  # type: ignore[no-any-return]


def _tidy(value: Number) -> Number:
    if isinstance(value, int):
        return value
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if rounded.is_integer() and abs(rounded) < 1e15:
        return int(rounded)  # 10 / 2 reads 5, not 5.0
    return rounded


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Attribute):
        return "an attribute"
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"the operator {type(node.op).__name__}"
    return f"a {type(node).__name__}"


def _zone(name: str | None) -> tzinfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, "Europe"
        raise ToolConfigError(
            f"{TIMEZONE_SETTING}: {name!r} is not a known IANA time zone, e.g. Europe/Paris"
        ) from None
