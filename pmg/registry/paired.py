"""Paired comparison of a candidate version with production over the same evaluation pairs.

Two versions' aggregate metrics differ by noise as much as by quality: over
16 pairs the standard error of LPIPS is about 0.013, larger than a 0.01
tolerance. Both versions' outputs are measured on the same (user, target,
seed) pairs against the same reference images, so the per-pair differences
cancel what the pairs have in common (how hard a target is, how far a
history lies from it) and leave the adapter's effect.

A version carries its per-pair evaluation table (`PairMetrics`, one row per
output and reference image). `compare_pairs` joins the candidate's and
production's rows on the columns both tables share among

    pair:       user_id, target_item, seed            (one output of one version)
    reference:  reference, position, reference_item   (one image it is measured against)

keeps the rows of the gate's reference (`history` or `target`), averages rows
that the shared columns do not tell apart (several seeds of a pair in a table
that has a `seed` column, against one without), averages each pair's history
rows (each pair counts once, as in the evaluate stage's aggregate), and
bootstraps the mean per-pair regression (how much worse the
candidate is: `candidate - production` when lower is better). The one-sided
bound at `confidence` is what a gate compares with its tolerance: a
non-inferiority test, so a candidate passes only when the data show it is
not worse by more than the tolerance, and too few pairs refuse it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pmg.config import PairedGateConfig
from pmg.errors import RegistryError

#: Columns naming one evaluated output (a pair), in join order.
PAIR_KEYS = ("user_id", "target_item", "seed")
#: Columns naming the reference image an output is measured against.
REFERENCE_KEYS = ("reference", "position", "reference_item")
# `<column>_<reference>`: the evaluate stage's metric names; bare `lpips`
# is AlexNet LPIPS (`lpips_history` is `lpips_alex_history`).
_METRIC_NAME = re.compile(r"^(lpips_alex|lpips_vgg|lpips|ssim)_(history|target)$")
#: Bootstrap resamples drawn at once (bounds the memory to chunk x pairs floats).
_CHUNK = 1000


def pair_metric(metric: str) -> tuple[str, str] | None:
    """`(PairMetrics column, reference)` that a gated metric is the mean of, or None.

    `lpips_history` -> (`lpips_alex`, `history`); `ssim_target` -> (`ssim`,
    `target`); a metric that is not per pair (e.g. `n_pairs`) -> None.
    """
    match = _METRIC_NAME.match(metric)
    if match is None:
        return None
    column, reference = match.groups()
    return ("lpips_alex" if column == "lpips" else column), reference


@dataclass(frozen=True)
class PairedComparison:
    """One metric of a candidate against production, over their common pairs.

    Attributes:
        metric: the gated metric.
        n_pairs: pairs measured in both versions.
        candidate_mean: the candidate's mean over those pairs.
        production_mean: production's mean over the same pairs.
        regression: mean per-pair amount by which the candidate is worse
            (negative: better), in the metric's units.
        regression_bound: one-sided bootstrap bound of `regression` at
            `confidence`: the candidate is worse by at most this much.
        confidence: the bound's confidence.
        keys: the columns the two tables were joined on.
    """

    metric: str
    n_pairs: int
    candidate_mean: float
    production_mean: float
    regression: float
    regression_bound: float
    confidence: float
    keys: tuple[str, ...]


def _rows(table: pd.DataFrame, which: str, column: str, reference: str, variant: str | None) -> pd.DataFrame:
    """The rows of one reference kind (and of the variant) a gate compares."""
    missing = {"user_id", "target_item", "reference", column} - set(table.columns)
    if missing:
        raise RegistryError(f"the {which} per-pair table lacks column(s) {sorted(missing)}")
    if "variant" in table.columns:
        variants = sorted(table["variant"].astype(str).unique())
        if variant is not None:
            table = table[table["variant"].astype(str) == variant]
            if table.empty:
                raise RegistryError(f"the {which} per-pair table has no rows of variant {variant!r} (has {variants})")
        elif len(variants) > 1:
            raise RegistryError(
                f"the {which} per-pair table holds variants {variants}: name the one to compare "
                "(registry.paired.variant)"
            )
    return table[table["reference"].astype(str) == reference]


def compare_pairs(
    candidate: pd.DataFrame,
    production: pd.DataFrame,
    metric: str,
    direction: str,
    cfg: PairedGateConfig,
) -> PairedComparison:
    """Join two per-pair tables on their shared pair and reference columns; bound the regression.

    Args:
        candidate: the candidate version's `PairMetrics` rows.
        production: production's `PairMetrics` rows.
        metric: a per-pair metric name (see `pair_metric`).
        direction: `lower` or `higher` is better.
        cfg: confidence, resamples, seed, variant.

    Returns:
        The comparison (`n_pairs` may be below `cfg.min_pairs`; the gate decides).

    Raises:
        RegistryError: the metric is not per pair, or a table lacks a needed
            column or the variant.
    """
    found = pair_metric(metric)
    if found is None:
        raise RegistryError(
            f"gate metric {metric!r} is not a per-pair metric (<lpips|lpips_alex|lpips_vgg|ssim>_"
            "<history|target>), so it cannot be compared pair by pair"
        )
    column, reference = found
    cand = _rows(candidate, "candidate's", column, reference, cfg.variant)
    prod = _rows(production, "production's", column, reference, cfg.variant)
    shared = set(cand.columns) & set(prod.columns)
    pair_keys = [k for k in PAIR_KEYS if k in shared]
    keys = pair_keys + [k for k in REFERENCE_KEYS if k in shared]
    # Rows the shared columns do not tell apart (several seeds on one side only) are averaged first.
    cand = cand.groupby(keys, sort=False, as_index=False)[column].mean()
    prod = prod.groupby(keys, sort=False, as_index=False)[column].mean()
    joined = cand.merge(prod, on=keys, suffixes=("_c", "_p"))
    joined = joined.dropna(subset=[f"{column}_c", f"{column}_p"])
    per_pair = joined.groupby(pair_keys, sort=True)[[f"{column}_c", f"{column}_p"]].mean()
    cand_values = per_pair[f"{column}_c"].to_numpy(dtype=float)
    prod_values = per_pair[f"{column}_p"].to_numpy(dtype=float)
    worse = cand_values - prod_values if direction == "lower" else prod_values - cand_values
    n = len(worse)
    if n == 0:
        nan = float("nan")
        return PairedComparison(metric, 0, nan, nan, nan, nan, cfg.confidence, tuple(keys))
    return PairedComparison(
        metric=metric,
        n_pairs=n,
        candidate_mean=float(cand_values.mean()),
        production_mean=float(prod_values.mean()),
        regression=float(worse.mean()),
        regression_bound=bootstrap_upper_bound(worse, cfg.confidence, cfg.resamples, cfg.seed),
        confidence=cfg.confidence,
        keys=tuple(keys),
    )


def bootstrap_upper_bound(values: np.ndarray, confidence: float, resamples: int, seed: int) -> float:
    """One-sided percentile-bootstrap upper bound of the mean of `values`.

    Args:
        values: (n,) per-pair differences.
        confidence: e.g. 0.95: the bound exceeds 95 % of the bootstrap means.
        resamples: bootstrap resamples (pairs drawn with replacement).
        seed: the generator's seed (same data, same bound).
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()) if len(values) else float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        stop = min(start + _CHUNK, resamples)
        index = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[index].mean(axis=1)
    return float(np.quantile(means, confidence))
