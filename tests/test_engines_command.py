"""`voice-fsm engines` as a command: what it refuses before loading anything, and a model that
cannot be loaded. (Serving is tests/test_engines.py and tests/test_engines_shared.py.)"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from support.engines import QUICK_ENGINES
from support.local import require_local_engines
from support.servers import clean_env, console_script, free_port

pytestmark = pytest.mark.integration


def run_engines(workdir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), "engines", *args],
        env=clean_env(**{**QUICK_ENGINES, **settings}),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_public_address_without_api_keys_is_refused(tmp_path: Path) -> None:
    require_local_engines()
    done = run_engines(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert "VOICE_FSM_AUTH__API_KEYS" in done.stderr
    assert "--insecure-no-auth" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_exit_code_3(tmp_path: Path) -> None:
    require_local_engines()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_engines(tmp_path, "--port", str(taken.getsockname()[1]))
    assert done.returncode == 3
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_model_that_cannot_be_loaded_is_exit_code_1(tmp_path: Path) -> None:
    require_local_engines()
    missing = tmp_path / "missing.gguf"
    done = run_engines(
        tmp_path, "--port", str(free_port()), VOICE_FSM_LOCAL__LLM_MODEL=str(missing)
    )
    assert done.returncode == 1
    assert f"no file at {missing}" in done.stderr
    assert '"engines.load_failed"' in done.stdout
