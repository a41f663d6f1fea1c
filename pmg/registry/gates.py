"""Metric gates: may a candidate version replace the current production?

Each gate (`pmg.config.MetricGate`) names a metric, which direction is
better, and how far the candidate may fall behind production. Against a
production version the comparison is *paired* (`pmg.registry.paired`): both
versions' per-pair evaluation tables are joined on the same pairs and
reference images, and the gate passes only if the one-sided bootstrap bound
of the candidate's mean per-pair regression is within the tolerance at the
configured confidence, over at least `min_pairs` common pairs. A version
without a per-pair table cannot be compared that way and fails the gate
(`--force` overrides, recorded). With no production version the gate uses
its absolute `threshold` on the candidate's aggregate metric, or passes when
it has none. A candidate that lacks a gated metric fails that gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

from pmg.config import MetricGate, PairedGateConfig
from pmg.errors import RegistryError
from pmg.registry.paired import compare_pairs

BaselineKind = Literal["production", "threshold", "none"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate.

    Attributes:
        metric: the gated metric.
        direction: `lower` or `higher` is better.
        candidate: the candidate's value: its mean over the common pairs
            against production, else its aggregate metric (None if missing).
        baseline: production's mean over the same pairs, or the threshold
            (None if neither).
        baseline_kind: what `baseline` is.
        bound: against a threshold, the worst value the candidate may have;
            against production, the largest regression allowed (the
            tolerance in the metric's units). None if unbounded.
        tolerance: the configured tolerance (absolute, or a fraction).
        relative: whether `tolerance` is a fraction of production's value.
        passed: whether the gate passes.
        n_pairs: pairs compared (paired gates only).
        min_pairs: the pairs a paired gate needs.
        regression: mean per-pair amount by which the candidate is worse.
        regression_bound: its one-sided bootstrap bound at `confidence`.
        confidence: the bound's confidence.
        reason: why a paired comparison could not be made (it then fails).
    """

    metric: str
    direction: str
    candidate: float | None
    baseline: float | None
    baseline_kind: BaselineKind
    bound: float | None
    tolerance: float
    relative: bool
    passed: bool
    n_pairs: int | None = None
    min_pairs: int | None = None
    regression: float | None = None
    regression_bound: float | None = None
    confidence: float | None = None
    reason: str | None = None

    def describe(self, baseline_version: int | None = None) -> str:
        """One line naming the metric, both values and the bound."""
        status = "PASS" if self.passed else "FAIL"
        better = f"{self.direction} is better"
        head = f"{status} {self.metric} ({better})"
        if self.baseline_kind == "production":
            production = f"production v{baseline_version}" if baseline_version is not None else "production"
            if self.reason is not None:
                return f"{head}: no paired comparison with {production}: {self.reason}"
            tolerance = f"{self.tolerance:g}" + (" of production" if self.relative else "")
            pairs = f"over {self.n_pairs} common pairs"
            values = f"candidate {_fmt(self.candidate)} vs {production} {_fmt(self.baseline)}"
            if self.n_pairs is not None and self.min_pairs is not None and self.n_pairs < self.min_pairs:
                return f"{head}: only {self.n_pairs} pairs in common with {production}, need {self.min_pairs}"
            op = "<=" if self.passed else ">"
            level = f"{(self.confidence or 0) * 100:g}%"
            return (
                f"{head} {pairs}: {values}; regression {_signed(self.regression)}, "
                f"{level} bound {_signed(self.regression_bound)} {op} allowed {_fmt(self.bound)} "
                f"(tolerance {tolerance})"
            )
        if self.candidate is None:
            return f"{head}: missing from the candidate's metrics"
        if self.baseline_kind == "none":
            return (
                f"{head}: candidate {_fmt(self.candidate)}; "
                "no production value and no threshold to compare with"
            )
        op = "<=" if self.direction == "lower" else ">="
        return (
            f"{head}: candidate {_fmt(self.candidate)} vs threshold "
            f"{_fmt(self.baseline)} (no production value); must be {op} {_fmt(self.bound)}"
        )


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4g}"


@dataclass(frozen=True)
class GateReport:
    """All gates of one candidate against one baseline.

    Attributes:
        candidate_version: the version being promoted.
        baseline_version: the current production version, if any.
        results: one result per configured gate, in config order.
    """

    candidate_version: int
    baseline_version: int | None
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    def describe(self, only_failed: bool = False) -> str:
        results = self.failed if only_failed else self.results
        return "\n".join(f"  {result.describe(self.baseline_version)}" for result in results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate_version": self.candidate_version,
            "baseline_version": self.baseline_version,
            "passed": self.passed,
            "results": [asdict(result) for result in self.results],
        }


def _threshold_gate(gate: MetricGate, candidate: float | None) -> GateResult:
    """No production to compare with: the absolute threshold, or pass."""
    lower = gate.direction == "lower"
    if gate.threshold is not None:
        kind: BaselineKind = "threshold"
        baseline, bound = gate.threshold, gate.threshold
    else:
        kind, baseline, bound = "none", None, None
    if candidate is None:
        passed = False
    elif bound is None:
        passed = True
    else:
        passed = candidate <= bound if lower else candidate >= bound
    return GateResult(
        metric=gate.metric,
        direction=gate.direction,
        candidate=candidate,
        baseline=baseline,
        baseline_kind=kind,
        bound=bound,
        tolerance=gate.tolerance,
        relative=gate.relative,
        passed=passed,
    )


def _paired_gate(
    gate: MetricGate,
    candidate_pairs: pd.DataFrame | None,
    production_pairs: pd.DataFrame | None,
    paired: PairedGateConfig,
) -> GateResult:
    """Against production: the paired, bootstrapped non-inferiority check."""
    common = {
        "metric": gate.metric,
        "direction": gate.direction,
        "baseline_kind": "production",
        "tolerance": gate.tolerance,
        "relative": gate.relative,
        "min_pairs": paired.min_pairs,
        "confidence": paired.confidence,
    }
    missing = [
        name
        for name, table in (("the candidate", candidate_pairs), ("production", production_pairs))
        if table is None
    ]
    if missing:
        reason = f"{' and '.join(missing)} carries no per-pair evaluation table (push it with the pairs)"
        return GateResult(candidate=None, baseline=None, bound=None, passed=False, reason=reason, **common)
    assert candidate_pairs is not None and production_pairs is not None
    try:
        found = compare_pairs(candidate_pairs, production_pairs, gate.metric, gate.direction, paired)
    except RegistryError as err:
        return GateResult(candidate=None, baseline=None, bound=None, passed=False, reason=str(err), **common)
    allowed = gate.tolerance * abs(found.production_mean) if gate.relative else gate.tolerance
    passed = found.n_pairs >= paired.min_pairs and found.regression_bound <= allowed
    return GateResult(
        candidate=None if found.n_pairs == 0 else round(found.candidate_mean, 6),
        baseline=None if found.n_pairs == 0 else round(found.production_mean, 6),
        bound=allowed,
        passed=bool(passed),
        n_pairs=found.n_pairs,
        regression=None if found.n_pairs == 0 else round(found.regression, 6),
        regression_bound=None if found.n_pairs == 0 else round(found.regression_bound, 6),
        **common,
    )


def evaluate_gates(
    gates: Sequence[MetricGate],
    candidate_metrics: Mapping[str, float],
    *,
    candidate_version: int,
    production_version: int | None,
    candidate_pairs: pd.DataFrame | None = None,
    production_pairs: pd.DataFrame | None = None,
    paired: PairedGateConfig | None = None,
) -> GateReport:
    """Check every gate of a candidate against production (or thresholds).

    Args:
        gates: the configured gates.
        candidate_metrics: the candidate version's flat aggregate metrics
            (read against thresholds when there is no production).
        candidate_version: for the report.
        production_version: the current production version, or None when
            no version is in production.
        candidate_pairs: the candidate's per-pair evaluation table.
        production_pairs: production's per-pair evaluation table.
        paired: how the paired comparison is made (default settings if None).
    """
    settings = paired if paired is not None else PairedGateConfig()
    if production_version is None:
        results = tuple(_threshold_gate(gate, candidate_metrics.get(gate.metric)) for gate in gates)
    else:
        results = tuple(_paired_gate(gate, candidate_pairs, production_pairs, settings) for gate in gates)
    return GateReport(candidate_version, production_version, results)
