"""The embedded engines in tests: skip where they are not installed, except in CI."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

from voice_fsm.adapters.local.packages import local_engines_installed


def require_local_engines() -> None:
    """Skip the calling test without the `local` extra; under CI=true that is a failure."""
    if local_engines_installed():
        return
    reason = "the embedded engines are not installed (make install adds the local extra)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run these tests")
    pytest.skip(reason)


def require_engine(module: str) -> ModuleType:
    """Import an engine's module, or skip the test module; under CI=true a missing one fails."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (the local extra)")
