"""Did personalisation recover what the simulation put in? (default world only)

The default world's users have latent preferences (`GroundTruth` table), which
the method never reads. Each scenario declares its own checks of them
(`pmg.scenarios.<name>.SCENARIO.ground_truth`: garment colour and pattern on
the output's pixels for clothing, genres named by the keywords for movies,
character and emotion named by the keywords for emoji); none uses CLIP (it
selected the outputs). :func:`ground_truth_hits` runs the scenario's check and
validates its rows (`GroundTruthHits`, `pmg.schemas`); :func:`summarize_hits`
turns them into the rates written next to LPIPS / SSIM.
"""

from __future__ import annotations

import pandas as pd

from pmg.io import validate
from pmg.scenarios import get as get_scenario
from pmg.scenarios.base import HIT_COLUMNS, TARGET_IMAGE
from pmg.schemas import GroundTruthHits

__all__ = ["HIT_COLUMNS", "TARGET_IMAGE", "ground_truth_hits", "summarize_hits"]


def ground_truth_hits(
    scenario: str,
    prepared,
    *,
    outputs: pd.DataFrame | None = None,
    keywords: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The scenario's ground-truth checks (its declaration's `ground_truth`), validated.

    Args:
        scenario: a registered scenario.
        prepared: its `PreparedScenario`.
        outputs: the evaluated outputs (`variant`, `user_id`, `target_item`,
            `image`), for checks on pixels.
        keywords: the evaluated users' `Keywords` rows, for checks on keywords.

    Returns:
        `GroundTruthHits` rows; none when the scenario declares no check or
        its check does not apply (real data, nothing evaluated).
    """
    check = get_scenario(scenario).ground_truth
    frame = check(prepared, outputs=outputs, keywords=keywords) if check is not None else None
    if frame is None:
        frame = pd.DataFrame(columns=HIT_COLUMNS)
    return validate(frame, GroundTruthHits, f"ground truth[{scenario}]")


# ---------------------------------------------------------------- summary


def summarize_hits(hits: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Rates per variant: `{variant: {<check>: mean, <check>_target_differs: mean, n_<check>: count, ...}}`.

    A check's rate is the mean of `value` over rows where it is defined;
    `<check>_target_differs` restricts to rows whose target lacks the
    expected value (only where that is known), with its own count.
    """
    out: dict[str, dict] = {}
    if hits.empty:
        return out
    for variant, part in hits.groupby("variant", sort=True):
        entry: dict[str, float | int | None] = {}
        for check, rows in part.groupby("check", sort=True):
            values = rows["value"].dropna()
            entry[check] = round(float(values.mean()), 6) if len(values) else None
            entry[f"n_{check}"] = len(values)
            known = rows[rows["target_differs"].notna()]
            if len(known):
                differs = known[known["target_differs"].astype(bool)]["value"].dropna()
                entry[f"{check}_target_differs"] = round(float(differs.mean()), 6) if len(differs) else None
                entry[f"n_{check}_target_differs"] = len(differs)
        out[str(variant)] = entry
    return out
