"""Metric gates: may a candidate version replace the current production?

Each gate (`pmg.config.MetricGate`) names a metric, which direction is
better, and how far the candidate may fall behind production. Personalisation
(`lpips_history`, lower is better) may not regress by more than the
tolerance; accuracy (`lpips_target`) must stay within tolerance. With no
production version the gate uses its absolute `threshold`, or passes when it
has none. A candidate that lacks a gated metric fails that gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pmg.config import MetricGate

BaselineKind = Literal["production", "threshold", "none"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate.

    Attributes:
        metric: the gated metric.
        direction: `lower` or `higher` is better.
        candidate: the candidate's value (None if it lacks the metric).
        baseline: production's value or the threshold (None if neither).
        baseline_kind: what `baseline` is.
        bound: the worst value the candidate may have (None if unbounded).
        tolerance: the configured tolerance (absolute, or a fraction).
        relative: whether `tolerance` is a fraction of production's value.
        passed: whether the gate passes.
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

    def describe(self, baseline_version: int | None = None) -> str:
        """One line naming the metric, both values and the bound."""
        status = "PASS" if self.passed else "FAIL"
        better = f"{self.direction} is better"
        if self.candidate is None:
            return f"{status} {self.metric} ({better}): missing from the candidate's metrics"
        if self.baseline_kind == "none":
            return (
                f"{status} {self.metric} ({better}): candidate {_fmt(self.candidate)}; "
                "no production value and no threshold to compare with"
            )
        op = "<=" if self.direction == "lower" else ">="
        if self.baseline_kind == "threshold":
            return (
                f"{status} {self.metric} ({better}): candidate {_fmt(self.candidate)} vs threshold "
                f"{_fmt(self.baseline)} (no production value); must be {op} {_fmt(self.bound)}"
            )
        tolerance = f"{self.tolerance:g}" + (" of production" if self.relative else "")
        production = f"production v{baseline_version}" if baseline_version is not None else "production"
        return (
            f"{status} {self.metric} ({better}): candidate {_fmt(self.candidate)} vs {production} "
            f"{_fmt(self.baseline)}; must be {op} {_fmt(self.bound)} (tolerance {tolerance})"
        )


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


def _check_gate(gate: MetricGate, candidate: float | None, production: float | None) -> GateResult:
    lower = gate.direction == "lower"
    baseline: float | None
    bound: float | None
    if production is not None:
        kind: BaselineKind = "production"
        baseline = production
        slack = gate.tolerance * abs(production) if gate.relative else gate.tolerance
        bound = production + slack if lower else production - slack
    elif gate.threshold is not None:
        kind, baseline, bound = "threshold", gate.threshold, gate.threshold
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


def evaluate_gates(
    gates: Sequence[MetricGate],
    candidate_metrics: Mapping[str, float],
    production_metrics: Mapping[str, float] | None,
    *,
    candidate_version: int,
    production_version: int | None,
) -> GateReport:
    """Check every gate of a candidate against production (or thresholds).

    Args:
        gates: the configured gates.
        candidate_metrics: the candidate version's flat metrics.
        production_metrics: the current production version's metrics, or
            None when no version is in production.
        candidate_version: for the report.
        production_version: for the report.
    """
    production = production_metrics or {}
    results = tuple(
        _check_gate(gate, candidate_metrics.get(gate.metric), production.get(gate.metric)) for gate in gates
    )
    return GateReport(
        candidate_version, production_version if production_metrics is not None else None, results
    )
