"""Debian's real Prometheus scraping a real `voice-fsm serve` (fake providers): after 5 turns and
1 failing turn, its HTTP API gives the turns' figures back (p50s within one bucket)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from voice_fsm.latency_stats import percentile
from voice_fsm.metrics import STAGE_TIMINGS

from support.prometheus import (
    JOB,
    PrometheusError,
    PrometheusWithTurns,
    bucket_index,
    prometheus_with_turns,
    turn_lines,
)

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

SELECT = f'job="{JOB}"'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusWithTurns]:
    with prometheus_with_turns(tmp_path_factory.mktemp("prometheus")) as running:
        yield running


def p50_query(metric: str, **labels: str) -> str:
    selector = ",".join([SELECT, *(f'{k}="{v}"' for k, v in labels.items())])
    return f"histogram_quantile(0.5, sum by (le) (rate({metric}_bucket{{{selector}}}[1m])))"


def assert_same_bucket(what: str, prometheus_s: float | None, turns_ms: list[int]) -> None:
    p50 = percentile(turns_ms, 50)
    assert p50 is not None, what
    assert prometheus_s is not None, f"{what}: no value from Prometheus"
    print(f"\n{what}: Prometheus p50 {prometheus_s:.4f} s, the turns' p50 {p50} ms")
    assert abs(bucket_index(prometheus_s) - bucket_index(p50 / 1000)) <= 1, (
        f"{what}: Prometheus p50 {prometheus_s:.3f} s, the turns' p50 {p50} ms ({turns_ms})"
    )


def test_voice_to_voice_p50_agrees_with_the_turns(stack: PrometheusWithTurns) -> None:
    figures = stack.turns.values_ms("voice_to_voice_ms")
    assert len(figures) == 5
    prometheus_s = stack.prometheus.scalar(p50_query("voice_fsm_voice_to_voice_seconds"))
    assert_same_bucket("voice to voice", prometheus_s, figures)


@pytest.mark.parametrize(("stage", "field"), [(stage, name) for stage, name, _ in STAGE_TIMINGS])
def test_each_stage_p50_agrees_with_the_turns(
    stack: PrometheusWithTurns, stage: str, field: str
) -> None:
    figures = stack.turns.values_ms(field)
    assert len(figures) == 5
    expr = p50_query("voice_fsm_stage_seconds", stage=stage, provider="fake")
    assert_same_bucket(stage, stack.prometheus.scalar(expr), figures)


def test_the_stages_keep_their_order_in_prometheus(stack: PrometheusWithTurns) -> None:
    """The fake stages last 80 (stt), 120 (llm first token) and 30 ms (tts first audio): the
    stored figures tell them apart as the turns did."""
    means = {}
    for stage in ("stt", "llm_first_token", "tts_first_audio"):
        selector = f'{SELECT},stage="{stage}"'
        means[stage] = stack.prometheus.scalar(
            f"sum(voice_fsm_stage_seconds_sum{{{selector}}})"
            f" / sum(voice_fsm_stage_seconds_count{{{selector}}})"
        )
    turns = {
        stage: sum(stack.turns.values_ms(f"{stage}_ms")) / 5000
        for stage in ("stt", "llm_first_token", "tts_first_audio")
    }
    assert means == pytest.approx(turns, abs=1e-6)
    assert turns["llm_first_token"] > turns["stt"] > turns["tts_first_audio"]


def test_turns_and_errors_as_the_log_lines_count_them(stack: PrometheusWithTurns) -> None:
    outcomes = Counter(line["outcome"] for line in turn_lines(stack.server_log))
    assert outcomes == {"ok": 5, "error": 1}
    stored = {
        sample["metric"]["outcome"]: float(sample["value"][1])
        for sample in stack.prometheus.query(
            f"sum by (outcome) (voice_fsm_turns_total{{{SELECT}}}) > 0"
        )
    }
    assert stored == outcomes
    errors = stack.prometheus.query(
        f"sum by (code, stage) (voice_fsm_errors_total{{{SELECT}}}) > 0"
    )
    assert [(e["metric"], float(e["value"][1])) for e in errors] == [
        ({"code": "no-audio", "stage": "input"}, 1.0)
    ]
    # The client has left: no live session.
    stack.prometheus.wait_until(f"voice_fsm_sessions{{{SELECT}}}", lambda v: v == 0)


def test_a_bad_query_is_reported_not_swallowed(stack: PrometheusWithTurns) -> None:
    """The helper other tests use to run the dashboard's queries fails on a broken one."""
    with pytest.raises(PrometheusError, match="bad_data"):
        stack.prometheus.query("histogram_quantile(0.5, sum by (le) (rate(voice_fsm_x[1m]))")
    assert stack.prometheus.query(f"voice_fsm_no_such_metric{{{SELECT}}}") == []
