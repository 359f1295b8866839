"""The built-in clock and calculator."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from voice_fsm.tools.builtin import builtin_tools, evaluate
from voice_fsm.tools.calls import ServerTool, ToolFailure
from voice_fsm.tools.functions import ToolConfigError


def tools_by_name(timezone: str | None = None) -> dict[str, ServerTool]:
    return {tool.spec.name: tool for tool in builtin_tools(timezone)}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("17 * 23", 391),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("-5 + 2", -3),
        ("-(3 - 10)", 7),
        ("2 ** 3 ** 2", 512),
        ("-2 ** 2", -4),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("10 / 4", 2.5),
        ("10 / 2", 5),
        ("0.1 + 0.2", 0.3),
        ("1.5 * 4", 6),
        ("2 ** -1", 0.5),
        ("2^10", 1024),
        ("6 \u00d7 7", 42),
        ("  12  ", 12),
    ],
)
def test_calculator_computes_like_arithmetic(expression: str, value: float) -> None:
    result = evaluate(expression)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 ** 1000000", "too large"),
        ("9 ** 9 ** 9", "too large"),
        ("10.0 ** 400", "too large"),
        ("1e999", "too large"),
        ("(-8) ** 0.5", "not a real number"),
    ],
)
def test_calculator_refuses_results_it_cannot_give(expression: str, message: str) -> None:
    with pytest.raises(ToolFailure, match=message) as caught:
        evaluate(expression)
    assert caught.value.kind == "failed"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "not a function call"),
        ("os.system", "not an attribute"),
        ("x + 1", "not the name 'x'"),
        ("'a' * 3", "allowed: 'a'"),
        ("True + 1", "allowed: True"),
        ("1j * 2", "allowed: 1j"),
        ("1 << 100", "not the operator LShift"),
        ("[1, 2]", "not a List"),
        ("1 +", "is not an arithmetic expression"),
        ("1 + 1; 2", "is not an arithmetic expression"),
        ("1" + " + 1" * 60, "longer than 200 characters"),
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str, message: str) -> None:
    with pytest.raises(ToolFailure, match=message) as caught:
        evaluate(expression)
    assert caught.value.kind == "invalid-arguments"


def test_the_deepest_nesting_the_length_allows_is_computed() -> None:
    assert evaluate("(" * 99 + "1" + ")" * 99) == 1
    assert evaluate("-" * 199 + "1") == -1


async def test_calculator_tool_answers_with_the_expression_and_its_result() -> None:
    calculator = tools_by_name()["calculator"]
    assert calculator.source == "builtin"
    assert calculator.spec.description == "Evaluate an arithmetic expression such as 17 * 23."
    assert calculator.spec.parameters["required"] == ["expression"]
    assert await calculator.call({"expression": "17 * 23"}) == {
        "expression": "17 * 23",
        "result": 391,
    }


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak", "UTC"])
async def test_clock_tells_the_time_in_the_configured_zone(zone: str) -> None:
    clock = tools_by_name(zone)["clock"]
    before = datetime.now(ZoneInfo(zone))
    answer = await clock.call({})
    after = datetime.now(ZoneInfo(zone))
    # The minute may turn between the readings; the answer is one of them.
    readings = {
        (m.strftime("%Y-%m-%d"), m.strftime("%A"), m.strftime("%H:%M")) for m in (before, after)
    }
    assert (answer["date"], answer["weekday"], answer["time"]) in readings
    assert answer["timezone"] == zone
    # +14 h and -10 h from UTC: a clock in the wrong zone would be hours off.
    assert abs(
        datetime.fromisoformat(f"{answer['date']}T{answer['time']}")
        - (before.replace(tzinfo=None, second=0, microsecond=0))
    ) <= timedelta(minutes=1)


async def test_clock_without_a_zone_uses_the_machines() -> None:
    answer = await tools_by_name(None)["clock"].call({})
    now = datetime.now().astimezone()
    assert answer["timezone"] == now.tzname()
    assert answer["date"] in {
        now.strftime("%Y-%m-%d"),
        (now - timedelta(minutes=1)).strftime("%Y-%m-%d"),
    }


def test_clock_takes_no_arguments() -> None:
    schema = tools_by_name()["clock"].spec.parameters
    assert schema["properties"] == {}
    assert schema["required"] == []


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../etc/passwd", ""])
def test_an_unknown_zone_is_a_clear_config_error(zone: str) -> None:
    with pytest.raises(ToolConfigError, match="VOICE_FSM_TOOLS__TIMEZONE") as caught:
        builtin_tools(zone)
    assert "IANA" in str(caught.value)
