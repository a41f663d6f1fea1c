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

import json

import pandas as pd

from pmg.io import validate
from pmg.scenarios import get as get_scenario
from pmg.scenarios.base import HIT_COLUMNS, TARGET_IMAGE
from pmg.scenarios.movies import canonical_genre
from pmg.schemas import GroundTruthHits

__all__ = [
    "HIT_COLUMNS",
    "SUBSET_CHECKS",
    "TARGET_IMAGE",
    "ground_truth_hits",
    "subsets_markdown",
    "summarize_hits",
    "target_subsets",
]


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


# ---------------------------------------------------------------- subsets

SUBSET_CHECKS: dict[str, tuple[str, ...]] = {
    "clothing": ("colour", "pattern"),
    "movies": ("genre_precision", "genre_recall"),
    "emoji": ("character",),
}
"""The checks split by target subset (issue 11): clothing colour and pattern,
movie genre, emoji character."""

TARGET_HAS = "target has it"
TARGET_LACKS = "target lacks it"
SUBSET_COLUMNS = ["scenario", "variant", "check", "subset", "n", "rate"]


def movies_target_shares_genre(prepared) -> dict[tuple[str, str], bool]:
    """Per (user, target): whether the target movie has a genre of the user's history.

    MovieLens users have no latent preference; the genres of their history
    stand in for it (as in `pmg.scenarios.movies.movies_hits`), so the target "already has
    the preferred value" when it shares at least one genre with the history.
    """
    genres_of = {
        str(i): {canonical_genre(g) for g in json.loads(a).get("genres", [])}
        for i, a in zip(prepared.items["item_id"], prepared.items["attributes"])
    }
    out = {}
    for row in prepared.splits.itertuples(index=False):
        history = set().union(*(genres_of.get(str(i), set()) for i in json.loads(row.history_items)))
        target = genres_of.get(str(row.target_item), set())
        out[(str(row.user_id), str(row.target_item))] = bool(target & history)
    return out


def target_subsets(hits: pd.DataFrame, *, movies_prepared=None) -> pd.DataFrame:
    """Ground-truth rates split by whether the target already has the preferred value.

    Where the target already shows the user's preferred colour (pattern,
    genre, character), even a generator that copies the target scores a
    hit; where it does not, a hit means personalisation changed the item.
    The two subsets are reported apart, with their sizes, next to all pairs.

    Args:
        hits: `GroundTruthHits` rows of any scenarios and variants. Clothing
            and emoji rows carry `target_differs`; movie rows do not (no
            latent truth), so their subset comes from `movies_prepared`.
        movies_prepared: the movies `PreparedScenario`, needed when `hits`
            has movie rows (:func:`movies_target_shares_genre`).

    Returns:
        Columns `scenario`, `variant`, `check`, `subset` (`all`,
        :data:`TARGET_HAS`, :data:`TARGET_LACKS`), `n` (rows with a defined
        value) and `rate` (their mean; null when `n` is 0), one row per
        combination present, for the checks of :data:`SUBSET_CHECKS`, in
        scenario / variant / check / subset order. Rows whose subset is
        unknown count in `all` only.

    Raises:
        ValueError: movie rows without `movies_prepared`.
    """
    wanted = hits[[c in SUBSET_CHECKS.get(str(s), ()) for s, c in zip(hits["scenario"], hits["check"])]]
    if wanted.empty:
        return pd.DataFrame(columns=SUBSET_COLUMNS)
    has = pd.Series(pd.NA, index=wanted.index, dtype="object")
    known = wanted["target_differs"].notna()
    has[known] = ~wanted.loc[known, "target_differs"].astype(bool)
    movies = wanted["scenario"] == "movies"
    if movies.any():
        if movies_prepared is None:
            raise ValueError("movie ground-truth rows need movies_prepared (which targets share a genre)")
        shares = movies_target_shares_genre(movies_prepared)
        pairs = zip(wanted.loc[movies, "user_id"], wanted.loc[movies, "target_item"])
        has[movies] = [shares.get((str(u), str(t)), pd.NA) for u, t in pairs]
    frame = wanted.assign(_has=has)
    rows = []
    for scenario, checks in SUBSET_CHECKS.items():
        in_scenario = frame[frame["scenario"] == scenario]
        for variant in sorted(in_scenario["variant"].unique()):
            for check in checks:
                part = in_scenario[(in_scenario["variant"] == variant) & (in_scenario["check"] == check)]
                if part.empty:
                    continue
                for subset, rows_of in (
                    ("all", part),
                    (TARGET_HAS, part[part["_has"].eq(True)]),  # unknown (NA) subsets count in "all" only
                    (TARGET_LACKS, part[part["_has"].eq(False)]),
                ):
                    values = rows_of["value"].dropna()
                    rows.append(
                        {
                            "scenario": scenario,
                            "variant": variant,
                            "check": check,
                            "subset": subset,
                            "n": len(values),
                            "rate": round(float(values.mean()), 6) if len(values) else None,
                        }
                    )
    return pd.DataFrame(rows, columns=SUBSET_COLUMNS)


def subsets_markdown(table: pd.DataFrame) -> str:
    """The :func:`target_subsets` table in Markdown: a row per (scenario, check, variant), in table order.

    Columns: the rate and size of each subset, e.g. `0.350 (n=40)`; `—`
    where a subset has no rows.
    """
    header = ["scenario", "check", "variant", "all pairs", TARGET_HAS, TARGET_LACKS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if table.empty:
        return "\n".join(lines) + "\n"
    cell = {
        (r.scenario, r.check, r.variant, r.subset): "—" if pd.isna(r.rate) else f"{r.rate:.3f} (n={r.n})"
        for r in table.itertuples(index=False)
    }
    keys = dict.fromkeys((r.scenario, r.check, r.variant) for r in table.itertuples(index=False))
    for scenario, check, variant in keys:
        values = [cell.get((scenario, check, variant, s), "—") for s in ("all", TARGET_HAS, TARGET_LACKS)]
        lines.append("| " + " | ".join([scenario, check, variant, *values]) + " |")
    return "\n".join(lines) + "\n"
