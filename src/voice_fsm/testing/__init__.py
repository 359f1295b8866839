"""Test doubles that run over the network: a fake OpenAI-compatible server.

Names are imported lazily, so ``python -m voice_fsm.testing.fake_openai`` does not import
the module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voice_fsm.testing.fake_openai import (
        FakeOpenAIConfig,
        RecordedRequest,
        UploadedFile,
        create_fake_openai_app,
        running_fake_openai,
        speech_pcm,
    )

__all__ = [
    "FakeOpenAIConfig",
    "RecordedRequest",
    "UploadedFile",
    "create_fake_openai_app",
    "running_fake_openai",
    "speech_pcm",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("voice_fsm.testing.fake_openai"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
