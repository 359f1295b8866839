"""Python functions offered as tools (`VOICE_FSM_TOOLS__FUNCTIONS`, package.module:function).

The JSON Schema the model sees and the check of its arguments come from one pydantic model
built from the signature, so what the schema promises is what the call accepts.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    ValidationError,
    create_model,
)

from voice_fsm.adapters.base import ToolSpec
from voice_fsm.tools.calls import ServerTool, ToolFailure

SETTING = "VOICE_FSM_TOOLS__FUNCTIONS"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what every provider accepts as a name
MAX_ERRORS_SHOWN = 5
_ARGS_HEADINGS = ("args:", "arguments:", "parameters:", "params:")


class ToolConfigError(ValueError):
    """A tool the configuration names cannot be offered; raised at start-up."""


class FunctionTool:
    """A Python function run as a server tool."""

    def __init__(
        self,
        spec: ToolSpec,
        func: Callable[..., Any],
        model: type[BaseModel],
        names: dict[str, str],
        positional: Sequence[str],
        *,
        source: str = "function",
    ) -> None:
        self._spec = spec
        self._func = func
        self._model = model
        self._names = dict(names)
        self._positional = tuple(positional)
        self._source = source
        self._is_async = inspect.iscoroutinefunction(func)

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def source(self) -> str:
        return self._source

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments coerced to the parameters' types; `ToolFailure` (invalid-arguments)
        saying what is wrong otherwise."""
        try:
            checked = self._model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolFailure("invalid-arguments", describe_errors(exc)) from None
        return {name: getattr(checked, field) for name, field in self._names.items()}

    async def call(self, arguments: dict[str, Any]) -> Any:
        values = self.validate(arguments)
        args = [values.pop(name) for name in self._positional]
        if self._is_async:
            return await self._func(*args, **values)
        # A worker thread keeps the event loop free; a cancelled call stops being awaited at
        # once, though Python cannot stop the thread itself.
        return await asyncio.to_thread(self._func, *args, **values)


def describe_errors(exc: ValidationError) -> str:
    """pydantic's errors in words a language model can act on, without its URLs."""
    parts = []
    for error in exc.errors(include_url=False)[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - MAX_ERRORS_SHOWN
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def load_function_tools(paths: Sequence[str]) -> list[ServerTool]:
    """The functions at `paths` (package.module:function) as tools; `ToolConfigError` if one
    cannot be imported or described."""
    return [function_tool(_import(path), path=path) for path in paths]


def function_tool(
    func: Callable[..., Any],
    *,
    path: str | None = None,
    name: str | None = None,
    description: str | None = None,
    source: str = "function",
) -> FunctionTool:
    """`func` as a tool: its name, its docstring's first paragraph, its parameters' schema."""
    where = path or getattr(func, "__qualname__", repr(func))

    def fail(reason: str) -> ToolConfigError:
        return ToolConfigError(f"{SETTING}: {where}: {reason}")

    if not callable(func):
        raise fail(f"is a {type(func).__name__}, not a function")
    name = name or str(getattr(func, "__name__", ""))
    if not TOOL_NAME.match(name):
        raise fail(f"the tool name {name!r} must be 1-64 letters, digits, _ or -")
    doc = inspect.getdoc(func) or ""
    description = description if description is not None else _first_paragraph(doc)
    if not description:
        raise fail("has no docstring: its first paragraph tells the model what the tool does")
    try:
        signature = inspect.signature(func)
        hints = get_type_hints(func, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise fail(f"cannot read its signature ({exc})") from None
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}  # the model's field for each parameter
    positional = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise fail(f"*{param.name} or **{param.name}: a tool needs named parameters")
        if param.name not in hints:
            raise fail(f"parameter {param.name!r} has no type hint")
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(param.name)
        default = ... if param.default is param.empty else param.default
        # Fields of their own, aliased to the parameters: a parameter called "schema" or
        # "json" would shadow one of BaseModel's attributes.
        field = f"p{len(fields)}"
        names[param.name] = field
        fields[field] = (hints[param.name], Field(default, alias=param.name))
    try:
        model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        schema = clean_schema(model.model_json_schema())
    except (PydanticUserError, TypeError, ValueError) as exc:
        raise fail(f"pydantic cannot describe its parameters: {exc}") from None
    for param_name, text in _documented_args(doc).items():
        prop = schema["properties"].get(param_name)
        if prop is not None and "description" not in prop:
            prop["description"] = text
    spec = ToolSpec(name=name, description=description, parameters=schema)
    return FunctionTool(spec, func, model, names, positional, source=source)


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without pydantic's "title"s (noise a small model reads as content), always
    with "properties" and "required"."""
    cleaned: dict[str, Any] = _drop_titles(schema)
    # The usual order, which is how a reader (or a model) expects to meet them.
    ordered = {"type": "object", "properties": {}, "required": []}
    return ordered | cleaned


def _drop_titles(node: Any) -> Any:
    if isinstance(node, list):
        return [_drop_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            # Here the keys are names (a parameter may be called "title"), the values schemas.
            out[key] = {k: _drop_titles(v) for k, v in value.items()}
        else:
            out[key] = _drop_titles(value)
    return out


def _first_paragraph(doc: str) -> str:
    paragraph = doc.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _documented_args(doc: str) -> dict[str, str]:
    """A Google-style "Args:" section's descriptions by parameter name."""
    found: dict[str, str] = {}
    lines = doc.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().lower() in _ARGS_HEADINGS), None)
    if start is None:
        return found
    entry_indent: int | None = None
    current = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent or (indent == 0 and line.rstrip().endswith(":")):
            break
        match = re.match(r"\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line)
        if indent == entry_indent and match:
            current = match.group(1)
            found[current] = match.group(2).strip()
        elif current is not None and indent > entry_indent:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return {k: v for k, v in found.items() if v}


def _import(path: str) -> Callable[..., Any]:
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise ToolConfigError(f"{SETTING}: {path!r} is not package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolConfigError(f"{SETTING}: {path}: cannot import {module_name}: {exc}") from None
    except Exception as exc:  # importing runs the module's code: any failure is a config error
        raise ToolConfigError(
            f"{SETTING}: {path}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ToolConfigError(
                f"{SETTING}: {path}: {module_name} has no attribute {attr_path}"
            ) from None
    if not callable(target):
        raise ToolConfigError(f"{SETTING}: {path}: is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]
