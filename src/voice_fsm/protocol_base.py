"""The base of every protocol v1 message: unknown fields are refused, and a message once
parsed does not change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
