"""The Grafana dashboard in dashboards/grafana/ against the real thing it reads.

- Its LogQL queries (the Loki row) against real `turn.completed` lines of a real server: every
  line filter and label filter matches some line, every unwrapped field is in the matching lines
  and numeric, every grouping label is there.
- Its PromQL queries (the Prometheus row) against a real Prometheus scraping a real server.
- Its structure: datasources of the right type, unique ids, and every metric it queries is one
  the server exposes, so the dashboard cannot drift from the code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voice_fsm.latency_stats import percentile
from voice_fsm.machine import State

from support.prometheus import bucket_index, prometheus_with_turns
from support.servers import console_script, fake_env, free_port, run_talk, running_server

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboards" / "grafana" / "voice-fsm.json"
DATASOURCE_VARIABLES = {"prometheus": "${prometheus}", "loki": "${loki}"}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, the rows' collapsed children included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def targets(dashboard: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of the panels whose datasource is of `kind`."""
    return [
        (panel["title"], target)
        for panel in all_panels(dashboard)
        if panel["type"] != "row" and panel["datasource"]["type"] == kind
        for target in panel["targets"]
    ]


# --- LogQL: a small reading of the parts of a query that name the log line's fields ------------

_STRING = r'"((?:[^"\\]|\\.)*)"'
_STAGES = [
    ("contains", re.compile(r"\|=\s*" + _STRING)),
    ("excludes", re.compile(r"!=\s*" + _STRING)),
    ("json", re.compile(r"\|\s*json\b(?!\s+\w+\s*=)")),
    ("unwrap", re.compile(r"\|\s*unwrap\s+(\w+)")),
    ("label", re.compile(r"\|\s*(\w+)\s*(=|!=)\s*" + _STRING)),
]
_LOG_RANGE = re.compile(r"(\{[^{}]*\})([^\[\]]*?)\s*\[[^\]]+\]")
_SELECTOR_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|=|!=)\s*" + _STRING)


@dataclass
class LogRange:
    """One `{selector} | pipeline [range]` of a LogQL query."""

    stream_labels: set[str]
    contains: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    parses_json: bool = False
    label_filters: list[tuple[str, str, str]] = field(default_factory=list)
    unwraps: list[str] = field(default_factory=list)
    drops_errors: bool = False


def _next_stage(rest: str, expr: str) -> tuple[str, re.Match[str]]:
    for kind, pattern in _STAGES:
        stage = pattern.match(rest)
        if stage is not None:
            return kind, stage
    raise AssertionError(f"a pipeline stage this test cannot read: {rest!r} in {expr}")


def parse_log_ranges(expr: str) -> list[LogRange]:
    ranges = []
    for match in _LOG_RANGE.finditer(expr):
        selector, pipeline = match.group(1), match.group(2)
        log_range = LogRange(stream_labels={m.group(1) for m in _SELECTOR_LABEL.finditer(selector)})
        rest = pipeline.strip()
        while rest:
            kind, stage = _next_stage(rest, expr)
            if kind == "contains":
                log_range.contains.append(stage.group(1))
            elif kind == "excludes":
                log_range.excludes.append(stage.group(1))
            elif kind == "json":
                log_range.parses_json = True
            elif kind == "unwrap":
                log_range.unwraps.append(stage.group(1))
            elif stage.group(1) == "__error__":
                log_range.drops_errors = True
            else:
                name, op, value = stage.groups()
                log_range.label_filters.append((name, op, value))
            rest = rest[stage.end() :].strip()
        ranges.append(log_range)
    if not ranges:
        raise AssertionError(f"no log range (`{{...}} | ... [range]`) in {expr}")
    return ranges


def grouping_labels(expr: str, legend: str) -> set[str]:
    """The labels of `by (...)` clauses and of the legend's `{{label}}`s."""
    labels = {
        label.strip()
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)
        for label in group.split(",")
    }
    return labels | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def json_labels(line: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The labels Loki's `| json` makes of a line: nested objects flattened with `_`."""
    labels: dict[str, Any] = {}
    for key, value in line.items():
        if isinstance(value, dict):
            labels.update(json_labels(value, f"{prefix}{key}_"))
        else:
            labels[f"{prefix}{key}"] = value
    return labels


def _as_label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_logql(expr: str, legend: str, raw_lines: list[str]) -> None:
    """Fail unless every field `expr` names is in the real lines it selects, as it expects."""
    for log_range in parse_log_ranges(expr):
        assert log_range.parses_json, f"no `| json` in {expr}"
        matching = []
        for raw in raw_lines:
            if not all(text in raw for text in log_range.contains):
                continue
            if any(text in raw for text in log_range.excludes):
                continue
            labels = json_labels(json.loads(raw))
            for name, _, _ in log_range.label_filters:
                assert name in labels, f"label filter on {name!r}, a field no line has: {expr}"
            if all(
                (_as_label(labels[name]) == value) == (op == "=")
                for name, op, value in log_range.label_filters
            ):
                matching.append(labels)
        assert matching, f"no real line matches the filters of {expr}"
        for name in log_range.unwraps:
            values = [labels.get(name, KeyError) for labels in matching]
            assert KeyError not in values, f"unwrap {name}: not a field of the line: {expr}"
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            assert numbers, f"unwrap {name}: never a number in the lines: {values}"
            others = [v for v in values if v not in numbers]
            # A null (a stage that did not run) is a conversion error, which the query must drop.
            assert all(v is None for v in others), f"unwrap {name}: not numeric: {others}"
            assert not others or log_range.drops_errors, f'no `| __error__=""` after {name}'
        for label in grouping_labels(expr, legend):
            if label in log_range.stream_labels:
                continue
            missing = [labels for labels in matching if label not in labels]
            assert not missing, f"grouped by {label!r}, which the matching lines lack: {expr}"


# --- a real server, with one good turn and one failed turn ---------------------------------------


@dataclass
class Served:
    turn_lines: list[str]
    """The `turn.completed` lines, as written."""
    metrics_text: str
    """Its /metrics after the turns."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    workdir = tmp_path_factory.mktemp("dashboard-server")
    port = free_port()
    log = workdir / "server.log"
    env = fake_env()
    with running_server(
        [console_script(), "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        cwd=workdir,
        log=log,
    ):
        url = f"ws://127.0.0.1:{port}/ws"
        good = run_talk(workdir, url)
        assert good.returncode == 0, (good.stderr, log.read_text()[-3000:])
        # Shorter than the 100 ms a recording needs: the turn fails with no-audio (input).
        bad = run_talk(workdir, url, seconds=0.05)
        assert bad.returncode != 0
        assert json.loads(bad.stdout)["error"]["code"] == "no-audio"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200, metrics.text
    lines = [
        raw
        for raw in log.read_text().splitlines()
        if raw.startswith("{") and json.loads(raw).get("event") == "turn.completed"
    ]
    outcomes = sorted(json.loads(raw)["outcome"] for raw in lines)
    assert outcomes == ["error", "ok"], lines
    return Served(turn_lines=lines, metrics_text=metrics.text)


# --- the Loki row ---------------------------------------------------------------------------------


def test_the_logql_queries_name_fields_of_the_real_turn_completed_lines(served: Served) -> None:
    loki = targets(load_dashboard(), "loki")
    assert len(loki) >= 10  # voice-to-voice x3, stages x5 x2, outcomes, errors
    unwrapped = set()
    for title, target in loki:
        try:
            check_logql(target["expr"], target.get("legendFormat", ""), served.turn_lines)
        except AssertionError as err:
            raise AssertionError(f"panel {title!r}: {err}") from err
        unwrapped |= {name for r in parse_log_ranges(target["expr"]) for name in r.unwraps}
    # The latency the row promises: voice to voice and every stage.
    assert unwrapped == {
        "voice_to_voice_ms",
        "stt_ms",
        "llm_first_token_ms",
        "llm_ms",
        "tts_first_audio_ms",
        "tts_ms",
    }


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("unwrap voice_to_voice_ms", "unwrap voice_to_voice_msec"),
        ("unwrap stt_ms", "unwrap stt"),
        ("unwrap tts_ms", "unwrap outcome"),  # a field, but not a number
        ("sum by (outcome)", "sum by (outcomes)"),
        ("sum by (code, stage)", "sum by (code, stage, provider)"),
        ('event="turn.completed"', 'event="turn.complete"'),
        ('|= "turn.completed"', '|= "turn_completed"'),
        ('outcome="error"', 'outcome="failed"'),
        (' | __error__=""', ""),  # the failed turn's nulls would break the query
    ],
)
def test_the_logql_check_fails_on_a_misspelt_field(served: Served, good: str, bad: str) -> None:
    """The check above is not one that passes whatever the dashboard says."""
    changed = 0
    for _, target in targets(load_dashboard(), "loki"):
        if good not in target["expr"]:
            continue
        broken = target["expr"].replace(good, bad)
        with pytest.raises(AssertionError):
            check_logql(broken, target.get("legendFormat", ""), served.turn_lines)
        changed += 1
    assert changed, f"no query holds {good!r}"


# --- structure, and the metric names against the server's /metrics -------------------------------


def test_every_panel_has_a_datasource_of_its_kind_and_a_unique_id() -> None:
    dashboard = load_dashboard()
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in DATASOURCE_VARIABLES:
        assert variables[name]["type"] == "datasource"
        assert variables[name]["query"] == name  # the plugin it lists
    assert "job" in variables
    kinds = {"prometheus": 0, "loki": 0}
    for panel in panels:
        if panel["type"] == "row":
            continue
        source = panel["datasource"]
        assert source == {"type": source["type"], "uid": DATASOURCE_VARIABLES[source["type"]]}
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert target["expr"].strip(), panel["title"]
        kinds[source["type"]] += 1
    assert kinds["prometheus"] >= 8, kinds
    assert kinds["loki"] >= 4, kinds
    # Rows sit above their panels, which do not overlap.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        assert grid["x"] + grid["w"] <= 24


_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def exposed_series(metrics_text: str) -> set[str]:
    """Every series name the server's families can have, read with prometheus_client's parser
    (a labelled family with no child yet has no sample, but has its # TYPE)."""
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count"),
        "counter": ("_total",),
        "gauge": ("",),
        "summary": ("_sum", "_count", ""),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def check_metric_names(dashboard: dict[str, Any], exposed: set[str]) -> set[str]:
    """The metrics the Prometheus panels query; fail on one that `exposed` lacks."""
    queried = set()
    for title, target in targets(dashboard, "prometheus"):
        names = set(_METRIC.findall(target["expr"]))
        assert names, f"panel {title!r}: no metric selector in {target['expr']}"
        # Every voice_fsm_ name in the query is a selector (with the job filter).
        assert set(re.findall(r"\bvoice_fsm_\w+", target["expr"])) == names, target["expr"]
        missing = names - exposed
        assert not missing, f"panel {title!r} queries {missing}, which /metrics lacks"
        queried |= names
    return queried


def test_every_metric_the_dashboard_queries_is_one_the_server_exposes(served: Served) -> None:
    queried = check_metric_names(load_dashboard(), exposed_series(served.metrics_text))
    assert queried == {
        "voice_fsm_voice_to_voice_seconds_bucket",
        "voice_fsm_stage_seconds_bucket",
        "voice_fsm_turns_total",
        "voice_fsm_errors_total",
        "voice_fsm_sessions",
        "voice_fsm_sessions_by_state",
        "voice_fsm_provider_requests_total",
        "voice_fsm_engine_queue_depth",
        "voice_fsm_engine_queue_wait_seconds_bucket",
    }


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("voice_fsm_turns_total", "voice_fsm_turn_total"),
        ("voice_fsm_stage_seconds_bucket", "voice_fsm_stage_seconds"),  # not a series
        ("voice_fsm_sessions_by_state", "voice_fsm_session_states"),
    ],
)
def test_a_metric_the_server_lacks_fails_the_name_check(
    served: Served, good: str, bad: str
) -> None:
    dashboard = load_dashboard()
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            target["expr"] = target["expr"].replace(good, bad)
    with pytest.raises(AssertionError, match=bad):
        check_metric_names(dashboard, exposed_series(served.metrics_text))


# --- the Prometheus row, against a real Prometheus -----------------------------------------------

RATE_WINDOW = "5m"
"""For Grafana's $__rate_interval: a window that holds the whole test (a scrape before the
first turn, and the scrapes after the last), so a rate counts every turn."""
_GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def concrete(expr: str, job: str) -> str:
    """`expr` as Grafana would send it: its variables replaced by values."""
    values = {"__rate_interval": RATE_WINDOW, "__interval": "15s", "__range": "1h", "job": job}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"a variable this test does not know: ${name} in {expr}"
        return values[name]

    return _GRAFANA_VARIABLE.sub(value, expr)


STAGE_FIELDS = {
    "stt": "stt_ms",
    "llm_first_token": "llm_first_token_ms",
    "llm": "llm_ms",
    "tts_first_audio": "tts_first_audio_ms",
    "tts": "tts_ms",
}


def test_the_prometheus_queries_run_on_a_real_prometheus_and_agree_with_the_turns(
    tmp_path: Path,
) -> None:
    with prometheus_with_turns(tmp_path) as stack:
        prometheus, turns = stack.prometheus, stack.turns
        answers: dict[str, list[dict[str, Any]]] = {}
        for title, target in targets(load_dashboard(), "prometheus"):
            expr = concrete(target["expr"], job="voice-fsm")
            assert "$" not in expr, (title, expr)
            # Any error (a parse error, a bad function, a type mismatch) fails here.
            answers[target["expr"]] = prometheus.query(expr)

    def answer(*parts: str) -> list[dict[str, Any]]:
        """The answer of the one query holding all of `parts`."""
        found = [expr for expr in answers if all(part in expr for part in parts)]
        assert len(found) == 1, (parts, found)
        return answers[found[0]]

    # Voice to voice p50: Prometheus's estimate lies within one bucket of the turns' own p50.
    (sample,) = answer("histogram_quantile(0.5,", "voice_fsm_voice_to_voice_seconds_bucket")
    estimate = float(sample["value"][1])
    exact = percentile(turns.values_ms("voice_to_voice_ms"), 50)
    assert exact is not None
    assert abs(bucket_index(estimate) - bucket_index(exact / 1000)) <= 1, (estimate, exact)

    # Per stage p50: one series per stage, each within one bucket of the turns' p50.
    per_stage = {
        s["metric"]["stage"]: float(s["value"][1])
        for s in answer("histogram_quantile(0.5,", "voice_fsm_stage_seconds_bucket")
    }
    assert set(per_stage) == set(STAGE_FIELDS), per_stage
    for stage, name in STAGE_FIELDS.items():
        exact = percentile(turns.values_ms(name), 50)
        assert exact is not None, name
        assert abs(bucket_index(per_stage[stage]) - bucket_index(exact / 1000)) <= 1, (
            stage,
            per_stage[stage],
            exact,
        )

    # p95 and p99 of voice to voice are numbers, not NaN (there were turns to rank).
    for q in ("0.95", "0.99"):
        (sample,) = answer(f"histogram_quantile({q},", "voice_fsm_voice_to_voice_seconds_bucket")
        assert math.isfinite(float(sample["value"][1])), sample

    # The turns per minute show the good turns and the failed one.
    per_outcome = {
        s["metric"]["outcome"]: float(s["value"][1]) for s in answer("voice_fsm_turns_total")
    }
    assert per_outcome["ok"] > 0, per_outcome
    assert per_outcome["error"] > 0, per_outcome
    # The errors panel counts the failed turn: its series exist at zero from the start, so a
    # rate sees the step to 1.
    rising = {
        (s["metric"]["code"], s["metric"]["stage"])
        for s in answer("voice_fsm_errors_total")
        if float(s["value"][1]) > 0
    }
    assert rising == {(e["code"], e["stage"]) for e in turns.errors}, rising
    # Sessions by state: one series per state.
    states = {s["metric"]["state"] for s in answer("voice_fsm_sessions_by_state")}
    assert states == {state.value for state in State}
    assert answer("sum(voice_fsm_sessions{")
