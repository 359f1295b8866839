"""What every settings group shares: the group base (an empty value means unset), and the
field types read in more than one group (a base URL, a list from the environment)."""

from __future__ import annotations

import json
from typing import Annotated, get_args

from pydantic import BaseModel, BeforeValidator, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode


def _allows_none(annotation: object) -> bool:
    return type(None) in get_args(annotation)


def check_base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class SettingsGroup(BaseModel):
    """A group of settings (`VOICE_FSM_<GROUP>__<FIELD>`)."""

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        # `NAME=` in .env or the environment means "not set" for a field that may be unset.
        field = cls.model_fields.get(info.field_name or "")
        if value == "" and field is not None and _allows_none(field.annotation):
            return None
        return value


def split_list(value: object) -> object:
    """A list setting from the environment: JSON (`["a","b"]`) or comma-separated (`a,b`)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_list)]
