"""How the test run itself behaves: `make test` brings the Debian programs some tests need,
`.ci/run` makes every test run (CI=true), and a run says how many tests it skipped and why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import skip_summary
from support.servers import clean_env

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

TINY_TESTS = """
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="Debian's chromium is not installed")
def test_page():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_engine(n):
    pytest.skip("the embedded engines are not installed")

def test_later():
    pytest.skip("Debian's chromium is not installed")
"""


def run_pytest(workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest with the skip summary plugin on the tests in `workdir`, as a separate run."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "support.skip_summary", "-p", "no:cacheprovider"],
        cwd=workdir,
        env=clean_env(PYTHONPATH=str(TESTS), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_run_counts_its_skips_by_reason(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(TINY_TESTS)
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if " 4 tests skipped " in line)
    assert lines[start + 1 : start + 4] == [
        "    2 x Debian's chromium is not installed",
        "    2 x the embedded engines are not installed",
        "(with CI=true, as .ci/run sets, a test missing a program fails instead of skipping)",
    ]
    assert "1 passed, 4 skipped" in lines[-1]


def test_no_summary_without_skips_and_no_hint_under_ci(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text("def test_runs():\n    pass\n")
    done = run_pytest(tmp_path)
    assert done.returncode == 0
    assert "skipped" not in done.stdout
    (tmp_path / "test_tiny.py").write_text(TINY_TESTS)
    done = run_pytest(tmp_path, CI="true")
    assert " 4 tests skipped " in done.stdout
    assert "with CI=true" not in done.stdout


def test_this_run_has_the_skip_summary(request: pytest.FixtureRequest) -> None:
    """tests/conftest.py loads it: the hook is one of this very run's."""
    hooks = request.config.pluginmanager.hook.pytest_terminal_summary.get_hookimpls()
    assert skip_summary.pytest_terminal_summary in [hook.function for hook in hooks]


# ---------------------------------------------------------------- make test, .ci/run


def test_make_test_brings_the_debian_programs_first() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "-o", "install", "test", "ARGS=-k x"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [".ci/test-programs", ".venv/bin/pytest -k x"]


def as_someone_else(command: list[str]) -> list[str]:
    """`command` as the user nobody, when this is root (which would install with apt-get)."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("root without runuser: cannot run as another user")
    return [runuser, "-u", "nobody", "--", *command]


def test_without_root_the_test_programs_say_what_is_missing_and_go_on() -> None:
    # A clone may sit in a folder only root can enter (mktemp -d makes 0700 folders), so
    # the other user runs a copy from a folder anyone can read.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        script = Path(folder) / "test-programs"
        shutil.copy2(REPO / ".ci/test-programs", script)
        os.chmod(script, 0o755)
        done = subprocess.run(
            as_someone_else([str(script)]),
            env=clean_env(TEST_PROGRAMS="sh voice-fsm-no-such-program"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0
    assert done.stderr == (
        "test-programs: voice-fsm-no-such-program not installed (and this is not root with "
        "apt-get): their tests will skip, or fail under CI=true. Install with: sudo apt-get "
        "install voice-fsm-no-such-program\n"
    )


def test_present_programs_need_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / ".ci/test-programs")],
        env=clean_env(TEST_PROGRAMS="sh"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_ci_run_sets_ci_true_and_runs_make_test(tmp_path: Path) -> None:
    """.ci/run with a stand-in `make` first on PATH, which records how it was called."""
    fake = tmp_path / "make"
    record = tmp_path / "called"
    fake.write_text(f'#!/bin/sh\necho "CI=$CI args=$*" > {record}\n')
    fake.chmod(0o755)
    done = subprocess.run(
        [str(REPO / ".ci/run")],
        env={"PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin')}", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert record.read_text() == "CI=true args=test\n"
