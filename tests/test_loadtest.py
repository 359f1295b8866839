"""`make loadtest` at a tiny scale: the real HAProxy, two real `voice-fsm serve` processes, fake
providers that answer at once and four talking sessions; the figures it prints and writes must
agree with each other, and the README's capacity table must be the committed run's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from voice_fsm import docs_gen

from support.haproxy import find_haproxy

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SESSIONS = 4


def figures_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("readme_figures", BENCH / "readme_figures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_figures", module)
    spec.loader.exec_module(module)
    return module


def capacity_block(readme: str) -> str:
    return readme.split("<!-- capacity:begin -->")[1].split("<!-- capacity:end -->")[0]


def test_a_tiny_load_test_counts_turns_sessions_and_costs_consistently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_haproxy()
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "loadtest.py"),
            "--zero-latency",
            f"--steps={SESSIONS}",
            "--ramp=0.5",
            "--settle=2",
            "--hold=6",
            "--no-engines",
            f"--out-dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads((tmp_path / "loadtest.json").read_text())
    (step,) = run["fakes"]["steps"]

    # Every session talked through HAProxy, which spread them over both processes.
    assert step["sessions"] == step["sessions_open"] == SESSIONS
    assert sum(step["sessions_per_process"]) == SESSIONS
    assert all(count > 0 for count in step["sessions_per_process"])
    # The servers' turns are the clients' (give or take the ones ending at the hold's edges),
    # all of them ok, each with an overhead.
    assert step["turns"] > 0
    assert step["errors"] == step["server_failed_turns"] == 0
    assert step["server_outcomes"] == {"ok": step["turns"]}
    assert abs(step["client_turns"] - step["turns"]) <= SESSIONS
    assert set(step["overhead_ms"]) == {"p50", "p95", "p99", "max"}
    assert step["cpu_per_turn_ms"] == round(step["server_cpu_s"] * 1000 / step["turns"], 2)
    assert step["memory_per_session_kib"] == round(step["rss_growth_mib"] * 1024 / SESSIONS, 1)
    assert set(step["cores_busy"]) == {"servers", "haproxy", "fakes", "clients"}
    assert step["cores_busy"]["servers"] > 0
    assert "engines" not in run
    per_process = "+".join(str(n) for n in step["sessions_per_process"])
    assert f"{SESSIONS} sessions ({per_process} per process): {step['turns']} turns" in done.stdout

    # The README's table drawn from that run shows the step's own figures.
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "loadtest.json").write_text(json.dumps(run))
    table = figures_module(monkeypatch).render_capacity(tmp_path)
    row = f"| {SESSIONS} | {per_process.replace('+', ' + ')} | {step['turns']} | 0 | "
    assert row in table
    assert f"| {step['cpu_per_turn_ms']:.1f} |" in table


def test_the_readme_capacity_table_is_the_committed_load_test_run() -> None:
    readme = ROOT / docs_gen.README_PATH
    expected = docs_gen.expected_files(ROOT)[readme]
    assert capacity_block(readme.read_text(encoding="utf-8")) == capacity_block(expected)
