"""`voice-fsm latency` over a real server's log: a `voice-fsm serve` with fake providers, turns
made with `voice-fsm talk` (one of them failing), then the command as a user types it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from voice_fsm.latency_report import group_key, parse_line
from voice_fsm.latency_stats import STAGE_FIELDS, summarize

from support.servers import clean_env, console_script, fake_env, free_port, run_talk, running_server

pytestmark = pytest.mark.integration

OK_TURNS = (0.3, 0.5, 0.8, 1.0)
"""Question lengths (s) of the turns that succeed; one more, too short, fails with no-audio."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class ServerLog:
    path: Path
    lines: list[bytes]

    def turns(self) -> list[dict[str, Any]]:
        """The turn.completed lines, parsed here independently of the command."""
        found = []
        for raw in self.lines:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") == "turn.completed":
                found.append(line)
        return found


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> ServerLog:
    workdir = tmp_path_factory.mktemp("latency")
    port = free_port()
    log = workdir / "server.log"
    env = fake_env()
    url = f"ws://127.0.0.1:{port}/ws"
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=workdir,
        log=log,
    ) as server:
        for seconds in OK_TURNS:
            done = run_talk(workdir, url, seconds=seconds)
            assert done.returncode == 0, (done.stderr, log.read_text()[-3000:])
        failed = run_talk(workdir, url, seconds=0.05)
        assert failed.returncode == 1, failed.stderr
        assert "no-audio" in failed.stderr
    assert server.returncode == 0, log.read_text()[-3000:]  # stopped cleanly: the log is whole
    return ServerLog(log, log.read_bytes().splitlines())


def latency(
    *args: str, cwd: Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [console_script(), "latency", *args],
        input=stdin if stdin is not None else b"",
        env=env if env is not None else clean_env(),
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )


def latency_json(*args: str, cwd: Path, stdin: bytes | None = None) -> dict[str, Any]:
    done = latency("--json", *args, cwd=cwd, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_figures_are_summarize_over_the_logged_turns(
    server_log: ServerLog, tmp_path: Path
) -> None:
    turns = server_log.turns()
    assert len(turns) == len(OK_TURNS) + 1
    report = latency_json(str(server_log.path), cwd=tmp_path)

    summary = report["summary"]
    assert summary == summarize(turns)
    assert summary["turns"] == len(turns)
    assert summary["outcomes"] == {"error": 1, "ok": len(OK_TURNS)}
    assert summary["error_codes"] == {"no-audio": 1}
    for name in STAGE_FIELDS:  # the failed turn has no timings
        assert summary["stages"][name]["count"] == len(OK_TURNS)
        assert summary["stages"][name]["p50"] > 0
    others = [line for line in server_log.lines if line.strip()]
    assert report["skipped"]["other_event"] == len(others) - len(turns) > 0
    assert report["skipped"]["total"] == report["skipped"]["other_event"]
    assert "groups" not in report

    # The table for a person shows the same p50s.
    done = latency(str(server_log.path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    text = done.stdout.decode()
    assert text.startswith(f"{len(turns)} turns from {server_log.path}; ")
    for name in STAGE_FIELDS:
        stage = summary["stages"][name]
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert row.split()[1:] == [str(stage["count"])] + [
            f"{stage[p]:.0f}" for p in ("p50", "p95", "p99")
        ]
    assert f"outcomes: error 1, ok {len(OK_TURNS)}" in text
    assert "error codes: no-audio 1" in text


def test_bad_lines_are_skipped_and_counted(server_log: ServerLog, tmp_path: Path) -> None:
    turns = server_log.turns()
    bad_turn = {**turns[0], "stt_ms": "51"}  # a string where a number should be
    garbage = [
        b"INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
        bytes(range(256)).replace(b"\n", b""),  # binary, not UTF-8
        json.dumps(turns[0]).encode()[:40],  # cut short
        b"[1, 2, 3]",  # JSON, not an object
        b'"turn.completed"',  # JSON, not an object
        json.dumps(bad_turn).encode(),
        json.dumps({**turns[0], "voice_to_voice_ms": True}).encode(),  # a bool is no number
        b"",  # a blank line is not counted
    ]
    log = tmp_path / "mixed.log"
    lines = server_log.lines[:3] + garbage + server_log.lines[3:]
    log.write_bytes(b"\n".join(lines) + b"\n" + json.dumps(turns[-1]).encode()[:-5])
    report = latency_json(str(log), cwd=tmp_path)

    assert report["summary"] == summarize(turns)  # the bad lines change no figure
    clean = latency_json(str(server_log.path), cwd=tmp_path)["skipped"]
    assert report["skipped"] == {
        "total": clean["total"] + 8,
        "not_json": 4,  # uvicorn's line, the binary one, the two cut short
        "not_object": 2,
        "other_event": clean["other_event"],
        "bad_fields": 2,
    }
    text = latency(str(log), cwd=tmp_path).stdout.decode()
    assert "4 not JSON, 2 not a JSON object" in text.splitlines()[0]
    assert "2 turn.completed with bad fields" in text.splitlines()[0]


@pytest.mark.parametrize("args", [(), ("-",)])
def test_standard_input(server_log: ServerLog, tmp_path: Path, args: tuple[str, ...]) -> None:
    from_file = latency_json(str(server_log.path), cwd=tmp_path)
    from_stdin = latency_json(*args, cwd=tmp_path, stdin=server_log.path.read_bytes())
    assert from_stdin["sources"] == ["stdin"]
    assert from_stdin["summary"] == from_file["summary"]
    assert from_stdin["skipped"] == from_file["skipped"]


def test_grouped_by_hour_provider_and_mode(server_log: ServerLog, tmp_path: Path) -> None:
    turns = server_log.turns()
    # The same turns again, as another mode and providers would have logged them an hour later,
    # and one line without any grouped-by field.
    later = [
        {
            **turn,
            "mode": "hands_free",
            "providers": {"stt": "local", "llm": "openai", "tts": "local"},
            "timestamp": (
                datetime.fromisoformat(turn["timestamp"]) + timedelta(hours=1)
            ).isoformat(),
        }
        for turn in turns
    ]
    bare = {k: v for k, v in turns[0].items() if k not in ("mode", "providers", "timestamp")}
    log = tmp_path / "two.log"
    log.write_bytes(
        server_log.path.read_bytes()
        + b"".join(json.dumps(line).encode() + b"\n" for line in [*later, bare])
    )
    everything = [*turns, *later, bare]

    def expected(by: str) -> dict[str, Any]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for line in everything:
            turn, reason = parse_line(json.dumps(line))
            assert reason is None
            assert turn is not None
            groups.setdefault(group_key(turn, by), []).append(line)
        return {key: summarize(rows) for key, rows in groups.items()}

    by_mode = latency_json("--by", "mode", str(log), cwd=tmp_path)
    assert by_mode["by"] == "mode"
    assert by_mode["summary"] == summarize(everything)
    assert list(by_mode["groups"]) == ["hands_free", "push_to_talk", "unknown"]
    assert by_mode["groups"]["push_to_talk"] == summarize(turns)
    assert by_mode["groups"]["hands_free"] == summarize(later)
    assert by_mode["groups"] == expected("mode")

    by_provider = latency_json("--by", "provider", str(log), cwd=tmp_path)
    assert list(by_provider["groups"]) == ["fake/fake/fake", "local/openai/local", "unknown"]
    assert by_provider["groups"]["local/openai/local"] == summarize(later)

    by_hour = latency_json("--by", "hour", str(log), cwd=tmp_path)
    assert by_hour["groups"] == expected("hour")
    first = turns[0]["timestamp"][:13] + ":00Z"
    assert first in by_hour["groups"]
    assert by_hour["groups"]["unknown"]["turns"] == 1
    assert sum(group["turns"] for group in by_hour["groups"].values()) == len(everything)

    text = latency("--by", "mode", str(log), cwd=tmp_path).stdout.decode()
    assert f"== mode push_to_talk: {len(turns)} turns ==" in text
    assert f"== mode hands_free: {len(later)} turns ==" in text
    assert "== mode unknown: 1 turns ==" in text


def test_png_draws_the_charts(server_log: ServerLog, tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("matplotlib is missing (the test extra installs it): CI must run this")
        pytest.skip("matplotlib is not installed")
    out = tmp_path / "charts.png"
    done = latency("--png", str(out), str(server_log.path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert f"charts: {out}" in done.stdout.decode()
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1500, 900)
    assert len(data) > 20_000  # four drawn panels, not a blank canvas
    assert data.endswith(b"IEND\xaeB`\x82")


def test_png_without_matplotlib_says_how_to_install_it(
    server_log: ServerLog, tmp_path: Path
) -> None:
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    paths = [str(shim.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = clean_env(PYTHONPATH=os.pathsep.join(paths))
    out = tmp_path / "charts.png"
    done = latency("--png", str(out), str(server_log.path), cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stdout == b""
    message = done.stderr.decode()
    assert message.count("\n") == 1
    assert "pip install 'voice-fsm[bench]'" in message
    assert not out.exists()


def test_usage_and_file_problems_exit_2(server_log: ServerLog, tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    done = latency(str(server_log.path), str(missing), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode() == f"voice-fsm: {missing}: no such file\n"

    done = latency(str(tmp_path), cwd=tmp_path)
    assert (done.returncode, done.stderr.decode()) == (
        2,
        f"voice-fsm: {tmp_path}: is a directory\n",
    )

    done = latency("--by", "weekday", str(server_log.path), cwd=tmp_path)
    assert done.returncode == 2
    assert b"invalid choice: 'weekday'" in done.stderr
    assert b"Traceback" not in done.stderr


# ---------------------------------------------------------------- parse_line and group_key


def test_a_field_of_the_wrong_kind_spoils_the_line() -> None:
    line = {"event": "turn.completed", "outcome": "ok", "voice_to_voice_ms": 250}
    assert parse_line(json.dumps(line))[0] is not None
    for bad in (
        {"voice_to_voice_ms": -1},
        {"voice_to_voice_ms": float("nan")},
        {"stt_ms": [1]},
        {"outcome": None},
        {"mode": 3},
        {"providers": "fake"},
        {"providers": {"stt": 1}},
        {"timestamp": "yesterday"},
        {"timestamp": 1764500000},
    ):
        assert parse_line(json.dumps(line | bad)) == (None, "bad_fields"), bad


def test_group_keys() -> None:
    turn, _ = parse_line(
        json.dumps(
            {
                "event": "turn.completed",
                "outcome": "ok",
                "timestamp": "2026-11-30T23:59:59.9+01:00",  # 22:59 UTC
                "providers": {"stt": "openai", "llm": "local"},
                "mode": "hands_free",
            }
        )
    )
    assert turn is not None
    assert group_key(turn, "hour") == "2026-11-30T22:00Z"
    assert group_key(turn, "provider") == "openai/local/?"
    assert group_key(turn, "mode") == "hands_free"
    naive, _ = parse_line(
        '{"event": "turn.completed", "outcome": "ok", "timestamp": "2026-11-30T05:10"}'
    )
    assert naive is not None
    assert group_key(naive, "hour") == "2026-11-30T05:00Z"
    assert (group_key(naive, "provider"), group_key(naive, "mode")) == ("unknown", "unknown")


def test_a_reader_that_stops_early_is_no_error(server_log: ServerLog, tmp_path: Path) -> None:
    # `voice-fsm latency app.log --by hour | head -1` over 2,000 hours: far more output than a
    # pipe holds, so the command writes into a closed pipe.
    turn = server_log.turns()[0]
    start = datetime.fromisoformat(turn["timestamp"])
    log = tmp_path / "long.log"
    log.write_text(
        "".join(
            json.dumps(turn | {"timestamp": (start + timedelta(hours=h)).isoformat()}) + "\n"
            for h in range(2000)
        )
    )
    reader = subprocess.Popen(
        [console_script(), "latency", "--by", "hour", str(log)],
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().startswith(b"2000 turns from ")
    reader.stdout.close()
    _, stderr = reader.communicate(timeout=60)
    assert (reader.returncode, stderr) == (0, b"")
