"""Metric gates, without a server: thresholds, and the paired comparison against production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pmg.config import MetricGate, PairedGateConfig
from pmg.registry.gates import GateReport, evaluate_gates
from pmg.registry.paired import bootstrap_upper_bound, compare_pairs, pair_metric

HISTORY = MetricGate(metric="lpips_history", direction="lower", tolerance=0.01)
TARGET = MetricGate(metric="lpips_target", direction="lower", tolerance=0.02)
PAIRED = PairedGateConfig(confidence=0.95, min_pairs=30, resamples=4000, seed=0)


def _report(
    gates: list[MetricGate],
    candidate: pd.DataFrame | None,
    production: pd.DataFrame | None,
    paired: PairedGateConfig = PAIRED,
) -> GateReport:
    return evaluate_gates(
        gates,
        {},
        candidate_version=2,
        production_version=1,
        candidate_pairs=candidate,
        production_pairs=production,
        paired=paired,
    )


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


# ------------------------------------------------------------ no production


def _threshold_report(gates: list[MetricGate], candidate: dict[str, float]) -> GateReport:
    return evaluate_gates(gates, candidate, candidate_version=1, production_version=None)


def test_no_production_uses_thresholds_or_passes() -> None:
    with_threshold = MetricGate(metric="lpips_history", direction="lower", threshold=0.3)
    assert not _threshold_report([with_threshold], {"lpips_history": 0.35}).passed
    assert _threshold_report([with_threshold], {"lpips_history": 0.25}).passed
    ssim = MetricGate(metric="ssim_target", direction="higher", threshold=0.2)
    assert not _threshold_report([ssim], {"ssim_target": 0.1}).passed
    report = _threshold_report([HISTORY], {"lpips_history": 9.0})
    assert report.passed and report.baseline_version is None
    assert "no production value and no threshold" in report.describe()


def test_missing_candidate_metric_fails_without_production() -> None:
    report = _threshold_report([HISTORY, TARGET], {"lpips_history": 0.4})
    assert [r.metric for r in report.failed] == ["lpips_target"]
    assert "missing from the candidate's metrics" in report.describe()
    assert report.to_dict()["passed"] is False


# ------------------------------------------------------------------ paired


def test_pair_metric_names() -> None:
    assert pair_metric("lpips_history") == ("lpips_alex", "history")
    assert pair_metric("lpips_vgg_target") == ("lpips_vgg", "target")
    assert pair_metric("ssim_history") == ("ssim", "history")
    assert pair_metric("n_pairs") is None and pair_metric("lpips") is None


def test_same_outputs_pass_and_a_clear_regression_fails(pairs_table: Any) -> None:
    production = _read(pairs_table(0.40, 0.50))
    same = _report([HISTORY, TARGET], production, production)
    assert same.passed
    result = same.results[0]
    assert (result.n_pairs, result.regression, result.regression_bound) == (40, 0.0, 0.0)

    # Worse on every pair by 0.02 (twice the tolerance): fails, with both means and the bound.
    worse = _report([HISTORY, TARGET], _read(pairs_table(0.42, 0.50)), production)
    assert [r.metric for r in worse.failed] == ["lpips_history"]
    line = worse.describe(only_failed=True)
    assert "FAIL lpips_history (lower is better) over 40 common pairs" in line
    assert "candidate 0.42 vs production v1 0.4" in line and "regression +0.02" in line
    assert "95% bound +0.02 > allowed 0.01" in line

    # Slightly worse on every pair, within the tolerance: passes.
    assert _report([HISTORY], _read(pairs_table(0.405, 0.50)), production).passed
    # Better: passes (the regression is negative).
    better = _report([HISTORY], _read(pairs_table(0.35, 0.50)), production)
    assert better.passed and better.results[0].regression == pytest.approx(-0.05)


def test_noisy_candidate_within_tolerance_on_average_is_refused(pairs_table: Any) -> None:
    """The issue's case: the mean is within tolerance, but the pairs do not show it is."""
    production = _read(pairs_table(0.40, 0.50))
    candidate = _read(pairs_table(0.405, 0.50, noise=0.05, noise_seed=3))
    mean_gap = candidate.query("reference == 'history'")["lpips_alex"].mean() - 0.40
    assert mean_gap <= HISTORY.tolerance  # an aggregate gate with this tolerance would pass it
    report = _report([HISTORY], candidate, production)
    result = report.results[0]
    assert not report.passed
    assert result.regression == pytest.approx(0.005, abs=1e-9)
    assert result.regression_bound > HISTORY.tolerance


def test_too_few_common_pairs_are_refused(pairs_table: Any) -> None:
    production = _read(pairs_table(0.40, 0.50))
    # 16 pairs, 10 of them shared with production (users 30..45 vs 0..39).
    candidate = _read(pairs_table(0.40, 0.50, users=range(30, 46)))
    report = _report([HISTORY], candidate, production)
    assert not report.passed and report.results[0].n_pairs == 10
    assert "only 10 pairs in common with production v1, need 30" in report.describe()
    loose = PairedGateConfig(min_pairs=10, resamples=1000)
    assert _report([HISTORY], candidate, production, loose).results[0].n_pairs == 10


def test_tables_are_joined_on_the_columns_they_share(pairs_table: Any) -> None:
    production = _read(pairs_table(0.40, 0.50))
    # A newer evaluation with a `seed` column and two seeds per pair, against a production without
    # seeds: joined on user/target and the reference columns; the seeds of a pair are averaged.
    seeded = pd.concat([production.assign(seed=0), production.assign(seed=1)], ignore_index=True)
    seeded.loc[seeded["seed"] == 1, "lpips_alex"] += 0.04  # each pair's mean moves by +0.02
    found = compare_pairs(seeded, production, "lpips_history", "lower", PAIRED)
    assert found.keys == ("user_id", "target_item", "reference", "position", "reference_item")
    assert found.n_pairs == 40 and found.regression == pytest.approx(0.02)
    # Both with seeds: joined per seed, each (pair, seed) one output.
    both = compare_pairs(
        seeded, pd.concat([production.assign(seed=0), production.assign(seed=1)]), "lpips_history", "lower", PAIRED
    )
    assert "seed" in both.keys and both.n_pairs == 80 and both.regression == pytest.approx(0.02)
    # Only the reference images both measured are compared: dropping one history image of
    # production drops it from the candidate's side too (its +0.3 does not count).
    changed = production.copy()
    first = (changed["reference"] == "history") & (changed["position"] == 0)
    changed.loc[first, "lpips_alex"] += 0.3
    fewer = production[~first]
    assert compare_pairs(changed, fewer, "lpips_history", "lower", PAIRED).regression == pytest.approx(0.0)


def test_higher_is_better_and_relative_tolerance(pairs_table: Any) -> None:
    production = _read(pairs_table(0.40, 0.50)).assign(ssim=0.50)
    ssim = MetricGate(metric="ssim_target", direction="higher", tolerance=0.1, relative=True)  # 0.05
    assert _report([ssim], production.assign(ssim=0.46), production).passed
    failed = _report([ssim], production.assign(ssim=0.44), production)
    assert not failed.passed
    assert "FAIL ssim_target (higher is better)" in failed.describe()
    assert "allowed 0.05 (tolerance 0.1 of production)" in failed.describe()


def test_missing_tables_and_unpaired_metrics_fail_with_the_reason(pairs_table: Any) -> None:
    table = _read(pairs_table())
    report = _report([HISTORY], None, table)
    assert not report.passed
    assert "no paired comparison with production v1: the candidate carries no per-pair" in report.describe()
    assert "production carries no" in _report([HISTORY], table, None).describe()
    other = MetricGate(metric="fid", direction="lower", tolerance=1.0)
    assert "'fid' is not a per-pair metric" in _report([other], table, table).describe()
    named = PairedGateConfig(variant="soft+keywords", resamples=1000)
    assert "no rows of variant 'soft+keywords' (has ['pmg'])" in _report([HISTORY], table, table, named).describe()
    mixed = pd.concat([table, table.assign(variant="none")])
    assert "holds variants ['none', 'pmg']: name the one" in _report([HISTORY], mixed, table).describe()
    # Differently named single variants (the generate switches changed) are still compared.
    assert _report([HISTORY], table.assign(variant="keywords"), table).passed


def test_bootstrap_bound_covers_the_mean_at_the_stated_confidence() -> None:
    """Over many samples from a known distribution, the 90 % upper bound is above the true mean ~90 %."""
    rng = np.random.default_rng(7)
    covered = [
        bootstrap_upper_bound(rng.normal(0.0, 1.0, size=40), 0.90, 2000, seed) >= 0.0 for seed in range(200)
    ]
    assert 0.82 <= float(np.mean(covered)) <= 0.96
    # Deterministic for a seed; tighter with more pairs.
    values = rng.normal(0.0, 1.0, size=400)
    assert bootstrap_upper_bound(values, 0.95, 2000, 1) == bootstrap_upper_bound(values, 0.95, 2000, 1)
    assert bootstrap_upper_bound(values, 0.95, 2000, 1) - values.mean() < 0.15
