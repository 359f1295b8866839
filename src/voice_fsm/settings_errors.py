"""A settings error as one line that names each bad environment variable and what is wrong
with it, for `serve` and `talk` (no traceback)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

# Settings fields read from a standard variable rather than a VOICE_FSM_ one.
_STANDARD_ENV = {"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL"}
_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)" from source "(\w+)"')


def env_var_for(loc: Sequence[int | str]) -> str:
    """The environment variable behind a settings error location: ('llm', 'timeout') ->
    VOICE_FSM_LLM__TIMEOUT."""
    parts = [str(part) for part in loc]
    if parts and parts[0].lower() in _STANDARD_ENV:
        return _STANDARD_ENV[parts[0].lower()]
    return "VOICE_FSM_" + "__".join(part.upper() for part in parts)


def format_settings_error(err: ValidationError | SettingsError) -> str:
    """One line naming each bad variable and what is wrong with it."""
    if isinstance(err, SettingsError):
        # Raised when a group's value (VOICE_FSM_LLM='...') is not valid JSON.
        match = _SETTINGS_ERROR_FIELD.search(str(err))
        if match is None:
            return f"invalid settings: {err}"
        where = " (in .env)" if match.group(2).startswith("DotEnv") else ""
        reason = f": not valid JSON ({err.__cause__})" if err.__cause__ else ""
        return f"invalid setting {env_var_for([match.group(1)])}{where}{reason}"
    problems = [
        f"{env_var_for(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
        for error in err.errors(include_url=False)
    ]
    if len(problems) == 1:
        return f"invalid setting {problems[0]}"
    return "invalid settings: " + "; ".join(problems)
