"""Python functions as tools: the schema the model sees, the checks at start-up, the calls."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest

from voice_fsm.tools.calls import ServerTool, ToolFailure
from voice_fsm.tools.functions import ToolConfigError, function_tool, load_function_tools

EXAMPLES = "support.example_tools"


def load_one(name: str) -> ServerTool:
    (tool,) = load_function_tools([f"{EXAMPLES}:{name}"])
    return tool


def test_schema_and_description_come_from_the_signature_and_docstring() -> None:
    tool = load_one("add")
    assert isinstance(tool, ServerTool)
    assert tool.spec.name == "add"
    assert tool.spec.description == "Add two whole numbers."
    assert tool.spec.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert tool.source == "function"


def test_schema_shapes_of_the_common_types() -> None:
    schema = load_one("weather").spec.parameters
    props = schema["properties"]
    assert props["city"] == {"type": "string", "description": "the city's name"}
    assert props["unit"] == {
        "type": "string",
        "enum": ["celsius", "fahrenheit"],
        "default": "celsius",
    }
    assert props["days"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert props["days"]["description"] == "how many days ahead, from 1 to 7."
    assert props["hours"]["type"] == "array"
    assert props["hours"]["items"] == {"type": "integer"}
    assert props["wind"] == {"type": "number", "default": 0.5}
    assert schema["required"] == ["city"]  # parameters with defaults are optional
    assert "title" not in str(schema)


def test_no_parameters_gives_an_empty_object_schema() -> None:
    schema = load_one("which_thread").spec.parameters
    assert schema["type"] == "object"
    assert schema["properties"] == {}
    assert schema["required"] == []


async def test_parameters_named_like_pydantic_words_keep_their_names() -> None:
    def note(title: str, schema: str = "plain", json: bool = False) -> str:
        """Write a note."""
        return f"{title} {schema} {json}"

    tool = function_tool(note)
    assert tool.spec.parameters["properties"] == {
        "title": {"type": "string"},
        "schema": {"type": "string", "default": "plain"},
        "json": {"type": "boolean", "default": False},
    }
    assert await tool.call({"title": "t", "json": True}) == "t plain True"


async def test_arguments_are_coerced_before_the_function_runs() -> None:
    tool = load_one("add")
    assert await tool.call({"a": "2", "b": 3}) == 5


async def test_arguments_that_do_not_fit_are_refused_with_what_is_wrong() -> None:
    tool = load_one("add")
    with pytest.raises(ToolFailure) as caught:
        await tool.call({"a": "two"})
    assert caught.value.kind == "invalid-arguments"
    assert "a: Input should be a valid integer" in caught.value.message
    assert "b: Field required" in caught.value.message
    with pytest.raises(ToolFailure, match="c: Extra inputs are not permitted"):
        await tool.call({"a": 1, "b": 2, "c": 3})


async def test_async_functions_are_awaited() -> None:
    tool = load_one("greet")
    assert await tool.call({"name": "Ada", "excited": True}) == "Hello, Ada!"


async def test_sync_functions_run_off_the_event_loop_thread() -> None:
    result = await load_one("which_thread").call({})
    assert result["thread"] != threading.get_ident()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("support.example_tools", "is not package.module:function"),
        ("support.no_such_module:add", "cannot import support.no_such_module"),
        ("support.example_tools:missing", "has no attribute missing"),
        ("support.example_tools:NOT_A_FUNCTION", "is a int, not a function"),
        ("support.example_tools:no_hint", "parameter 'x' has no type hint"),
        ("support.example_tools:star_args", "*numbers"),
        ("support.example_tools:star_kwargs", "**options"),
        ("support.example_tools:takes_callback", "pydantic cannot describe"),
        ("support.example_tools:takes_opaque", "pydantic cannot describe"),
        ("support.example_tools:no_docstring", "has no docstring"),
    ],
)
def test_a_function_that_cannot_be_offered_is_a_clear_config_error(
    path: str, expected: str
) -> None:
    with pytest.raises(ToolConfigError) as caught:
        load_function_tools([path])
    message = str(caught.value)
    assert message.startswith("VOICE_FSM_TOOLS__FUNCTIONS: ")
    assert path in message
    assert expected in message
    assert isinstance(caught.value, ValueError)


def test_several_paths_load_in_order() -> None:
    tools = load_function_tools([f"{EXAMPLES}:add", f"{EXAMPLES}:greet"])
    assert [tool.spec.name for tool in tools] == ["add", "greet"]


def test_the_readmes_tool_loads_with_the_schema_it_promises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python tool shown in the README's Tools section, as a module named in the setting."""

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (code,) = re.findall(r"```python\n(  # shop_tools\.py.*?)```", readme, flags=re.DOTALL)
    source = "\n".join(line.removeprefix("  ") for line in code.splitlines())
    (tmp_path / "shop_tools.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "shop_tools", raising=False)
    (tool,) = load_function_tools(["shop_tools:order_status"])
    assert tool.spec.name == "order_status"
    assert tool.spec.description == "Where an order is and when it arrives."
    assert tool.spec.parameters["required"] == ["order_id"]
    order_id = tool.spec.parameters["properties"]["order_id"]
    assert order_id["type"] == "string"
    assert order_id["description"] == "the order number, like A-1042"
