"""Metric gates, without a server: directions, tolerances, thresholds, missing metrics."""

from __future__ import annotations

import pytest

from pmg.config import MetricGate
from pmg.registry.gates import GateReport, evaluate_gates

HISTORY = MetricGate(metric="lpips_history", direction="lower", tolerance=0.01)
TARGET = MetricGate(metric="lpips_target", direction="lower", tolerance=0.02)


def _report(
    gates: list[MetricGate],
    candidate: dict[str, float],
    production: dict[str, float] | None,
    production_version: int | None = 1,
) -> GateReport:
    return evaluate_gates(
        gates, candidate, production, candidate_version=2, production_version=production_version
    )


@pytest.mark.parametrize(
    ("candidate", "passed"),
    [(0.30, True), (0.40, True), (0.41, True), (0.4101, False), (0.60, False)],
)
def test_lower_is_better_with_tolerance(candidate: float, passed: bool) -> None:
    report = _report([HISTORY], {"lpips_history": candidate}, {"lpips_history": 0.40})
    assert report.passed is passed
    assert report.results[0].bound == pytest.approx(0.41)


def test_higher_is_better_and_relative_tolerance() -> None:
    ssim = MetricGate(metric="ssim", direction="higher", tolerance=0.1, relative=True)
    assert _report([ssim], {"ssim": 0.45}, {"ssim": 0.5}).passed  # bound 0.45
    failed = _report([ssim], {"ssim": 0.44}, {"ssim": 0.5})
    assert not failed.passed
    line = failed.results[0].describe(1)
    assert line == (
        "FAIL ssim (higher is better): candidate 0.44 vs production v1 0.5; must be >= 0.45 "
        "(tolerance 0.1 of production)"
    )


def test_only_failed_gates_are_reported_with_both_values() -> None:
    report = _report(
        [HISTORY, TARGET],
        {"lpips_history": 0.5, "lpips_target": 0.5},
        {"lpips_history": 0.4, "lpips_target": 0.5},
    )
    assert [r.metric for r in report.failed] == ["lpips_history"]
    text = report.describe(only_failed=True)
    assert "lpips_target" not in text and "candidate 0.5 vs production v1 0.4" in text


def test_no_production_uses_thresholds_or_passes() -> None:
    with_threshold = MetricGate(metric="lpips_history", direction="lower", threshold=0.3)
    assert not _report([with_threshold], {"lpips_history": 0.35}, None, None).passed
    assert _report([with_threshold], {"lpips_history": 0.25}, None, None).passed
    report = _report([HISTORY], {"lpips_history": 9.0}, None, None)
    assert report.passed and report.baseline_version is None
    assert "no production value and no threshold" in report.describe()
    # Production without the metric falls back the same way.
    assert (
        _report([with_threshold], {"lpips_history": 0.35}, {"other": 1.0}).results[0].baseline_kind
        == "threshold"
    )


def test_missing_candidate_metric_fails() -> None:
    report = _report([HISTORY, TARGET], {"lpips_history": 0.4}, {"lpips_history": 0.4, "lpips_target": 0.5})
    assert [r.metric for r in report.failed] == ["lpips_target"]
    assert "missing from the candidate's metrics" in report.describe()
    assert report.to_dict()["passed"] is False
