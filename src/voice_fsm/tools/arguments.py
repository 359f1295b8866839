"""Checking a call's arguments against a tool's JSON Schema (for tools that do not check them
themselves, an MCP server's), so the model hears what is wrong in words it can act on."""

from __future__ import annotations

import importlib
from typing import Any

from voice_fsm.adapters.base import ToolSpec
from voice_fsm.logging_setup import get_logger
from voice_fsm.tools.calls import ToolFailure

log = get_logger()
MAX_ERRORS_SHOWN = 3
MAX_MESSAGE_CHARS = 200  # jsonschema repeats the offending value, which may be long
MAX_CACHED = 1000  # validators kept; an MCP server may rename its tools as often as it likes


class SchemaChecks:
    """One jsonschema validator per tool, made again when the tool's schema changes. A schema
    that is not valid itself is not checked against (the tool's owner then judges)."""

    def __init__(self) -> None:
        self._validators: dict[str, tuple[dict[str, Any], Any]] = {}
        self._unavailable_warned = False

    def check(self, spec: ToolSpec, arguments: dict[str, Any]) -> None:
        """`ToolFailure` (invalid-arguments) if `arguments` do not match the schema."""
        validator = self._validator(spec)
        if validator is None:
            return
        errors = sorted(validator.iter_errors(arguments), key=_relevance())
        if not errors:
            return
        parts = [_describe(error) for error in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:
            parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
        raise ToolFailure("invalid-arguments", "; ".join(parts))

    def _validator(self, spec: ToolSpec) -> Any:
        cached = self._validators.get(spec.name)
        if cached is not None and cached[0] == spec.parameters:
            return cached[1]
        jsonschema = _jsonschema()
        if jsonschema is None:
            if not self._unavailable_warned:
                self._unavailable_warned = True
                log.warning("tools.arguments_unchecked", reason="jsonschema is not installed")
            return None
        validator = None
        try:
            cls = jsonschema.validators.validator_for(spec.parameters)
            cls.check_schema(spec.parameters)
            validator = cls(spec.parameters)
        except Exception as exc:  # a server's schema may be anything
            log.warning("tools.schema_invalid", tool=spec.name, error=str(exc)[:MAX_MESSAGE_CHARS])
        if len(self._validators) >= MAX_CACHED:
            self._validators.clear()
        self._validators[spec.name] = (spec.parameters, validator)
        return validator


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error.absolute_path) or "arguments"
    message = str(error.message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return f"{where}: {message}"


def _relevance() -> Any:
    jsonschema = _jsonschema()
    return jsonschema.exceptions.relevance if jsonschema is not None else None


def _jsonschema() -> Any:
    # Imported when first needed: it comes with the mcp extra, whose tools are the ones
    # checked here; a server without MCP never loads it.
    try:
        return importlib.import_module("jsonschema")
    except ImportError:
        return None
