"""Ablations (PMG §4.5, Tables 2 and 3): the same pairs and seeds, one variant at a time.

Variants (names are the keys of every output):

=================  =========================================  ==========================
name               what conditions the generator              paper
=================  =========================================  ==========================
`none`             target keywords only (no personalisation)  Table 2, baseline
`keywords`         + preference keywords `E_k`                Table 2
`soft`             + soft embeddings `E_m` only               Table 2
`soft+keywords`    `E_m` + `E_k` (PMG)                        Table 2
`no_prefix`        PMG with P-Tuning v2 off                   Table 3
`L<n>`             PMG with `n` multimodal tokens             Table 3 (`L0` = keywords)
=================  =========================================  ==========================

`soft`, `soft+keywords` and `no_prefix` use `train_soft.num_tokens` tokens;
every soft variant but `no_prefix` uses `train_soft.use_prefix`. A soft
variant needs an adapter trained with its (L, P-Tuning v2) setting, named by
:attr:`Variant.adapter_key` (`L4-prefix`, `L8-prefix`, `L4-noprefix`, ...).
A variant whose adapter is missing (e.g. every soft variant of `emoji`, for
which the paper trains none) is reported as skipped, not run.

Pairs and seeds. Every variant runs on the same (user, target) pairs — the
first `evaluate.ablation_max_users` users (natural id order) that have
keywords, behaviour lines and a catalogued target (:func:`ablation_pairs`) —
and candidate `k` of a pair has the same seed in every variant
(`pmg.method.generate.candidate_seed` does not depend on the variant), so
differences are the conditioning's. Budgets are equal (issue 11): `none`
generates the same K candidates as the others (the target alone, K seeds)
and keeps the one with the best target similarity, the personalised
variants keep the best `z` (`pmg.method.select.variant_alpha`).

Variants that would generate identical images (`L0` and `keywords`; `L4` and
`soft+keywords` when `num_tokens` is 4) share one run: a *generation key*
(soft on/off, keywords on/off, adapter key) identifies a run, and every
variant with that key reports its metrics (:func:`share_runs`).

This module holds what the ablations *are* (variants, pairs, metrics,
tables); the `ablations` stage (`pmg.stages.ablations`) runs each variant
through the same generate, select and evaluate functions as the main
stages and writes its outputs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pmg.config import GenerateConfig, Params
from pmg.errors import DataError
from pmg.evaluate.metrics import REFERENCES, Evaluation, metric_headers, per_pair_means, summarize
from pmg.evaluate.stats import (
    mismatched_users,
    paired_arrays,
    paired_difference,
    personalisation_gap,
    user_gaps,
)
from pmg.text import md_escape, natural_key

log = logging.getLogger(__name__)

TABLES = {
    "components": "preference conditions (paper Table 2)",
    "prompt_tuning": "P-Tuning v2 and multimodal tokens L (paper Table 3)",
}
TABLE_METRICS = tuple(metric_headers())
"""(metric, column title) of the tables, from the metrics' one declaration (`pmg.evaluate.metrics`)."""
BASELINE = "none"
PAIRED_REFERENCES = (BASELINE, "keywords")
"""Variants every other one is compared with, paired per test user."""
PAIRED_METRICS = ("lpips_alex_history", "lpips_alex_target", "ssim_history")
"""Per-user metrics whose paired differences (with a 95% bootstrap interval) the metrics carry."""
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Variant:
    """One ablation variant: what it conditions on and what it needs.

    Attributes:
        name: its key in every output (`none`, `keywords`, ..., `L8`).
        label: the row label of the tables.
        table: `components` (Table 2) or `prompt_tuning` (Table 3).
        use_soft: condition on soft preference embeddings `E_m`.
        use_keywords: condition on the preference keywords `E_k`.
        use_prefix: the adapter uses P-Tuning v2 (soft variants only).
        num_tokens: L, the adapter's multimodal tokens (soft variants only).
    """

    name: str
    label: str
    table: str
    use_soft: bool
    use_keywords: bool
    use_prefix: bool = True
    num_tokens: int = 4

    @property
    def soft(self) -> bool:
        """Whether `E_m` is really used (L = 0 means no soft tokens at all)."""
        return self.use_soft and self.num_tokens > 0

    @property
    def adapter_key(self) -> str | None:
        """The adapter this variant needs (`L4-prefix`, `L8-noprefix`, ...), or None."""
        if not self.soft:
            return None
        return f"L{self.num_tokens}-{'prefix' if self.use_prefix else 'noprefix'}"

    @property
    def generation_key(self) -> tuple[bool, bool, str | None]:
        """Variants with one key generate identical images and share one run."""
        return (self.soft, self.use_keywords, self.adapter_key)

    def generate_config(self, base: GenerateConfig) -> GenerateConfig:
        """The `generate` section of this variant: `base` with the two switches set."""
        return base.model_copy(update={"use_soft": self.soft, "use_keywords": self.use_keywords})


def variant(name: str, params: Params) -> Variant:
    """The variant called `name` (see the module docstring) under `params.train_soft`."""
    L, prefix = params.train_soft.num_tokens, params.train_soft.use_prefix
    fixed = {
        "none": Variant(
            "none", "No personalisation (target keywords)", "components", False, False, prefix, L
        ),
        "keywords": Variant("keywords", "Preference keywords", "components", False, True, prefix, L),
        "soft": Variant("soft", f"Soft embeddings (L={L})", "components", True, False, prefix, L),
        "soft+keywords": Variant(
            "soft+keywords", f"Keywords + soft embeddings (PMG, L={L})", "components", True, True, prefix, L
        ),
        "no_prefix": Variant(
            "no_prefix", f"PMG without P-Tuning v2 (L={L})", "prompt_tuning", True, True, False, L
        ),
    }
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"L(\d+)", name)
    if match:
        n = int(match.group(1))
        label = (
            f"PMG, L={n}" + (" (keywords only)" if n == 0 else "") + ("" if prefix else ", no P-Tuning v2")
        )
        return Variant(name, label, "prompt_tuning", True, True, prefix, n)
    raise ValueError(f"unknown ablation variant {name!r}; use {sorted(fixed)} or L<n>")


def variants(params: Params) -> list[Variant]:
    """The variants `evaluate.ablations` names, in that order."""
    return [variant(name, params) for name in params.evaluate.ablations]


# --------------------------------------------------------------------- runs


def run_folder_name(key: tuple[bool, bool, str | None]) -> str:
    """A folder name for a generation key: `none`, `keywords`, `soft-L4-prefix`, `soft-keywords-L8-prefix`."""
    soft, keywords, adapter = key
    parts = (["soft"] if soft else []) + (["keywords"] if keywords else [])
    return "-".join(parts or ["none"]) + (f"-{adapter}" if adapter else "")


def ablation_pairs(
    keywords: pd.DataFrame, behaviour: Mapping[str, str | None], items: pd.DataFrame, max_users: int | None
) -> pd.DataFrame:
    """The Keywords rows every variant runs on: the first `max_users` usable users by id."""
    known = set(items["item_id"].astype(str))
    has_behaviour = [bool(behaviour.get(str(u))) for u in keywords["user_id"]]
    in_catalogue = [str(t) in known for t in keywords["target_item"]]
    usable = keywords.loc[np.array([a and b for a, b in zip(has_behaviour, in_catalogue)], dtype=bool)]
    order = sorted(usable["user_id"].astype(str), key=natural_key)
    keep = set(order if max_users is None else order[:max_users])
    return usable[usable["user_id"].astype(str).isin(keep)].reset_index(drop=True)


def generation_groups(variant_list: Sequence[Variant]) -> dict[tuple, list[Variant]]:
    """Variants by generation key, in first-seen order; the first of each group leads its run."""
    groups: dict[tuple, list[Variant]] = {}
    for v in variant_list:
        groups.setdefault(v.generation_key, []).append(v)
    return groups


def share_runs(evaluation: Evaluation, aliases: Mapping[str, Sequence[str]]) -> Evaluation:
    """`evaluation` with the rows of each run's lead copied under the names of the variants that shared it.

    Args:
        evaluation: the evaluation of every run's outputs, under the leads' names.
        aliases: lead variant -> the other variants of its run.
    """
    extra_pairs, extra_issues, extra_requests = [], [], []
    for lead, others in aliases.items():
        for name in others:
            extra_pairs.append(evaluation.pairs[evaluation.pairs["variant"] == lead].assign(variant=name))
            extra_issues.append(evaluation.issues[evaluation.issues["variant"] == lead].assign(variant=name))
            extra_requests += [(name, u, t) for (v, u, t) in evaluation.requests if v == lead]
    if extra_pairs:
        evaluation.pairs = pd.concat([evaluation.pairs, *extra_pairs], ignore_index=True)
        evaluation.issues = pd.concat([evaluation.issues, *extra_issues], ignore_index=True)
        evaluation.requests += extra_requests
    return evaluation


def ablation_metrics(evaluation: Evaluation, names: Sequence[str]) -> dict[str, dict]:
    """`{variant: metrics}`: the table's metrics, their standard errors, counts, and the change vs `none`.

    `lpips_history_change_vs_none` is `(LPIPS_v - LPIPS_none) / LPIPS_none`
    on the AlexNet history distance (negative = closer to the history than
    the non-personalised baseline; the paper's headline is up to -8%).
    """
    out: dict[str, dict] = {}
    for name in names:
        full = summarize(evaluation, name, with_sem=True)
        entry = {metric: full[metric] for metric, _ in TABLE_METRICS}
        entry.update({f"{metric}_sem": full[f"{metric}_sem"] for metric, _ in TABLE_METRICS})
        entry.update(
            n_pairs=full["n_pairs"],
            n_history=full["n_history"],
            n_target=full["n_target"],
            n_skipped=full["n_skipped"],
        )
        out[name] = entry
    base = out.get(BASELINE, {}).get("lpips_alex_history")
    for entry in out.values():
        value = entry.get("lpips_alex_history")
        entry["lpips_history_change_vs_none"] = (
            round((value - base) / base, 6) if base and value is not None else None
        )
    return out


# -------------------------------------------------------------- statistics


def ablation_statistics(
    scenario: str,
    evaluation: Evaluation,
    control: Mapping[str, Mapping[str, np.ndarray]],
    users: Sequence[str],
    names: Sequence[str],
    *,
    permutations: int,
    resamples: int,
    control_seed: int,
    seed: int,
) -> dict[str, dict]:
    """Per variant: the mismatched-user gap with its permutation test, and paired differences (issue 11).

    Keys (flat, merged into each variant's metrics by the stage), for each
    control metric `m` (`lpips_alex`, `ssim`):

    * `gap_<m>` (positive = the output is closer to its own user's history
      than to its partner's), `gap_<m>_own`, `gap_<m>_other`, `gap_<m>_p`
      (one-sided permutation p-value);
    * `gap_<m>_diff_vs_none` with `_lo` / `_hi`: the variant's per-user gaps
      minus `none`'s, 95% bootstrap interval over users;
    * `personalises_<m>`: the gap is positive (p < 0.05) *and* larger than
      `none`'s (the interval of the difference lies above 0); False for
      `none` itself.

    And for each of `PAIRED_METRICS` and each reference `r` in
    `PAIRED_REFERENCES` other than the variant: `<metric>_diff_vs_<r>`,
    `_lo`, `_hi` (variant − reference, paired per user; for LPIPS negative =
    closer). Generation seeds are one column (`seed` 0) of the long table,
    so the multi-seed path of :func:`pmg.evaluate.stats.paired_arrays` is used.

    Args:
        scenario: named in every error and skip reason.
        evaluation: every variant's PairMetrics (variants under their own names).
        control: `{variant: {metric: (n, n)}}` from `pmg.evaluate.control.HistoryBank.matrix`.
        users: the test users in the matrices' row / column order.
        names: the variants that ran.
        permutations, resamples: of the permutation test and the bootstrap.
        control_seed: the derangement's seed; `seed` that of the permutations and resamples.

    Returns:
        `{variant: {key: value}}`. With fewer than 2 users, every variant gets
        `statistics_skipped` (the reason) instead; a reference variant that did
        not run gives `statistics_skipped_vs_<r>`.

    Raises:
        DataError: a variant that ran has no control matrix, or a user's value
            is missing in one variant (output unreadable, no history image),
            naming the scenario, the variant and the user.
    """
    where = f"ablations of {scenario}"
    out: dict[str, dict] = {name: {} for name in names}
    users = [str(u) for u in users]
    if len(users) < 2:
        reason = (
            f"{scenario}: {len(users)} test user(s); the mismatched-user control and the paired intervals "
            "need at least 2"
        )
        for entry in out.values():
            entry["statistics_skipped"] = reason
        return out
    partner_of = mismatched_users(users, control_seed)
    position = {u: i for i, u in enumerate(users)}
    partner = np.array([position[partner_of[u]] for u in users])
    gap_rows: list[dict] = []
    for name in names:
        matrices = control.get(name)
        if matrices is None:
            raise DataError(
                where,
                f"variant {name!r} has no mismatched-user measurements: its run is missing",
                column="variant",
            )
        for metric, matrix in matrices.items():
            matrix = np.asarray(matrix, dtype=np.float64)
            if matrix.shape != (len(users), len(users)):
                raise DataError(
                    where, f"variant {name!r}: {metric} control is {matrix.shape}, not {len(users)} users"
                )
            bad = sorted({users[i] for i in np.argwhere(~np.isfinite(matrix))[:, 0]}, key=natural_key)
            if bad:
                raise DataError(
                    where,
                    f"variant {name!r}: no {metric} of user {bad[0]!r}'s output against every history "
                    f"({len(bad)} user(s); an unreadable output or a user without history images)",
                    column="user_id",
                )
            lower = metric.startswith("lpips")
            gap = personalisation_gap(
                matrix, partner, lower_is_closer=lower, permutations=permutations, seed=seed
            )
            out[name].update(
                {
                    f"gap_{metric}": round(gap.gap, 6),
                    f"gap_{metric}_own": round(gap.own, 6),
                    f"gap_{metric}_other": round(gap.other, 6),
                    f"gap_{metric}_p": round(gap.p_value, 6),
                }
            )
            for user, value in zip(users, user_gaps(matrix, partner, lower_is_closer=lower)):
                gap_rows.append({"variant": name, "user_id": user, "seed": 0, f"gap_{metric}": float(value)})
        out[name]["n_users_control"] = len(users)
    control_metrics = sorted({key for row in gap_rows for key in row if key.startswith("gap_")})
    frame = _per_user_frame(evaluation, gap_rows)
    for name in names:
        entry = out[name]
        for reference in PAIRED_REFERENCES:
            if reference == name:
                continue
            if reference not in names:
                reason = f"variant {reference!r} did not run in {scenario}"
                entry[f"statistics_skipped_vs_{reference}"] = reason
                continue
            columns = [*PAIRED_METRICS, *(control_metrics if reference == BASELINE else [])]
            for column in columns:
                _, values, base = paired_arrays(frame, name, reference, column, where=where)
                interval = paired_difference(values, base, resamples=resamples, seed=seed)
                key = f"{column}_diff_vs_{reference}"
                entry[key] = round(interval.mean, 6)
                entry[f"{key}_lo"] = round(interval.low, 6)
                entry[f"{key}_hi"] = round(interval.high, 6)
        for column in control_metrics:
            low = entry.get(f"{column}_diff_vs_{BASELINE}_lo")
            entry[f"personalises_{column.removeprefix('gap_')}"] = bool(
                name != BASELINE
                and entry[column] > 0
                and entry[f"{column}_p"] < SIGNIFICANCE
                and low is not None
                and low > 0
            )
    return out


def _per_user_frame(evaluation: Evaluation, gap_rows: list[dict]) -> pd.DataFrame:
    """Long table, one row per (variant, user, seed): `<metric>_<reference>` and the users' gaps."""
    means = per_pair_means(evaluation.pairs)
    wide = None
    for reference in REFERENCES:
        part = means[means["reference"] == reference].drop(columns=["reference", "target_item"])
        metrics = [c for c in part.columns if c not in ("variant", "user_id")]
        part = part.rename(columns={c: f"{c}_{reference}" for c in metrics})
        wide = part if wide is None else wide.merge(part, on=["variant", "user_id"], how="outer")
    wide = wide.assign(seed=0)
    if gap_rows:
        gaps = pd.DataFrame(gap_rows).groupby(["variant", "user_id", "seed"], as_index=False).first()
        wide = wide.merge(gaps, on=["variant", "user_id", "seed"], how="outer")
    wide["user_id"] = wide["user_id"].astype(str)
    return wide


# ------------------------------------------------------------------ tables


def _cell(value: float | None, sem: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" ± {sem:.4f}" if sem is not None else "")


def interval_cell(metrics: Mapping, key: str) -> str:
    """`-0.0120 [-0.0310, +0.0060]`: a paired difference with its 95% interval (`<key>`, `_lo`, `_hi`)."""
    values = [metrics.get(k) for k in (key, f"{key}_lo", f"{key}_hi")]
    if any(v is None for v in values):
        return "—"
    mean, low, high = values
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def gap_cell(metrics: Mapping, key: str) -> str:
    """`+0.0400 (p=0.001)`: a mismatched-user gap with its permutation p-value (`<key>`, `<key>_p`)."""
    gap, p_value = metrics.get(key), metrics.get(f"{key}_p")
    if gap is None or p_value is None:
        return "—"
    return f"{gap:+.4f} (p={p_value:.3f})"


NO_SELECTION = "no_selection"
"""Suffix of the metrics of a run's fixed candidate (no selection), and of its variant label."""


def fixed_candidate(n_candidates: int) -> int:
    """The candidate a run keeps without selection: the middle weight pair (2:2 of five); `none`: seed k = 2."""
    return n_candidates // 2


def selection_effect(
    scenario: str,
    selected: Evaluation,
    fixed: Evaluation,
    names: Sequence[str],
    fixed_of: Mapping[str, str],
    *,
    resamples: int,
    seed: int,
) -> dict[str, dict]:
    """What the selection rule adds: each variant's fixed candidate against its selected one, paired per user.

    Every variant generates the same K candidates per pair; without selection
    it would show :func:`fixed_candidate`. Per variant and metric of
    `PAIRED_METRICS`: `<metric>_no_selection` (the fixed candidate's mean)
    and `<metric>_selection_effect` (selected − fixed, paired per test user,
    with `_lo` / `_hi`, the 95% bootstrap interval). With these beside the
    differences against `none`, the effect of selection and of conditioning
    read apart. With fewer than 2 users there is no interval: the variant
    gets `selection_effect_skipped` (the reason) and only the fixed
    candidate's means.

    Args:
        selected: the evaluation of the chosen outputs (variants `names`).
        fixed: the evaluation of the fixed candidates (variants `fixed_of[name]`).
        fixed_of: variant -> the label of its fixed-candidate outputs in `fixed`.
    """
    where = f"ablations of {scenario}"
    chosen = _per_user_frame(selected, [])
    unselected = _per_user_frame(fixed, [])
    out: dict[str, dict] = {}
    for name in names:
        label = fixed_of[name]
        frame = pd.concat([chosen[chosen["variant"] == name], unselected[unselected["variant"] == label]])
        entry: dict[str, float] = {}
        for metric in PAIRED_METRICS:
            users, values, base = paired_arrays(frame, name, label, metric, where=where)
            entry[f"{metric}_{NO_SELECTION}"] = round(float(base.mean()), 6)
            if len(users) < 2:  # no interval over one user (as ablation_statistics): said, not a crash
                entry["selection_effect_skipped"] = (
                    f"{scenario}: {len(users)} test user(s); the paired interval of the selection effect "
                    "needs at least 2"
                )
                continue
            interval = paired_difference(values, base, resamples=resamples, seed=seed)
            entry[f"{metric}_selection_effect"] = round(interval.mean, 6)
            entry[f"{metric}_selection_effect_lo"] = round(interval.low, 6)
            entry[f"{metric}_selection_effect_hi"] = round(interval.high, 6)
        out[name] = entry
    return out


STATISTICS_COLUMNS = (
    ("Gap LPIPS-Alex (p)", lambda m: gap_cell(m, "gap_lpips_alex")),
    ("Gap − none [95% CI]", lambda m: interval_cell(m, "gap_lpips_alex_diff_vs_none")),
    ("Gap SSIM (p)", lambda m: gap_cell(m, "gap_ssim")),
    ("Personalises", lambda m: {True: "yes", False: "no"}.get(m.get("personalises_lpips_alex"), "—")),
    ("History LPIPS-Alex − none [95% CI]", lambda m: interval_cell(m, "lpips_alex_history_diff_vs_none")),
    (
        "History LPIPS-Alex − keywords [95% CI]",
        lambda m: interval_cell(m, "lpips_alex_history_diff_vs_keywords"),
    ),
    ("Target LPIPS-Alex − none [95% CI]", lambda m: interval_cell(m, "lpips_alex_target_diff_vs_none")),
    ("History SSIM − none [95% CI]", lambda m: interval_cell(m, "ssim_history_diff_vs_none")),
    ("History LPIPS-Alex, no selection", lambda m: _cell(m.get(f"lpips_alex_history_{NO_SELECTION}"))),
    (
        "History LPIPS-Alex, selected − unselected [95% CI]",
        lambda m: interval_cell(m, "lpips_alex_history_selection_effect"),
    ),
)
"""(title, cell of a variant's metrics) of the personalisation-and-paired-differences table."""


STATISTICS_NOTE = (
    "Gap: mismatched-user control (each output against another test user's history, a seeded "
    "derangement): mean(other) − mean(own) for LPIPS, mean(own) − mean(other) for SSIM, positive = "
    "personalised; p: one-sided permutation test. Personalises: gap > 0 with p < 0.05 and larger than "
    "none's (interval above 0). − none / − keywords: differences paired per test user, 95% percentile "
    "bootstrap interval over users. No selection: the run's fixed candidate (the middle weight pair, "
    "2:2; for none the same seed) instead of the one its rule selects; selected − unselected is what "
    "the selection adds, paired per user."
)
"""The note under the statistics table (README and HTML report)."""


@dataclass(frozen=True)
class StatisticsTable:
    """The personalisation-and-paired-differences table of one scenario, as formatted cells.

    Attributes:
        headers: column titles, `Variant` first.
        rows: one list of cells per variant that ran, in variant order.
        not_computed: why the statistics were not computed (empty when they were).
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    not_computed: tuple[str, ...] = ()


def statistics_table(metrics: Mapping[str, Mapping], variant_list: Sequence[Variant]) -> StatisticsTable | None:
    """The gaps and paired intervals of every variant that ran; None when no variant has them."""
    names = [v.name for v in variant_list if v.name in metrics]
    headers = ("Variant", *[title for title, _ in STATISTICS_COLUMNS])
    skipped = sorted({metrics[n]["statistics_skipped"] for n in names if "statistics_skipped" in metrics[n]})
    if skipped:
        return StatisticsTable(headers, (), tuple(str(reason) for reason in skipped))
    if not any("gap_lpips_alex" in metrics[n] for n in names):
        return None
    rows = tuple((name, *[cell(metrics[name]) for _, cell in STATISTICS_COLUMNS]) for name in names)
    return StatisticsTable(headers, rows)


def statistics_markdown(
    scenario: str, metrics: Mapping[str, Mapping], variant_list: Sequence[Variant]
) -> list[str]:
    """Lines of the mismatched-user gaps and paired intervals table (empty when no variant has them)."""
    table = statistics_table(metrics, variant_list)
    title = f"### {scenario} — personalisation and paired differences"
    if table is None:
        return []
    if table.not_computed:
        return [title, "", *(f"Not computed: {md_escape(reason)}" for reason in table.not_computed), ""]
    lines = [title, ""]
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(table.headers) - 1)) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join([md_escape(row[0]), *row[1:]]) + " |")
    return [*lines, "", STATISTICS_NOTE, ""]


def ablation_tables(
    metrics: Mapping[str, Mapping], variant_list: Sequence[Variant], skipped: Mapping[str, str]
) -> dict[str, list[dict]]:
    """Rows of each table (`components`, `prompt_tuning`) in variant order, for Markdown and HTML.

    Each row: `variant`, `label`, `n`, one formatted cell per `TABLE_METRICS`
    key, `change` (vs `none`), and `skipped` (reason or "").
    """
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    for v in variant_list:
        m = metrics.get(v.name)
        row = {"variant": v.name, "label": v.label, "skipped": skipped.get(v.name, "")}
        if m is None:
            row.update({key: "—" for key, _ in TABLE_METRICS}, n="—", change="—")
        else:
            row.update({key: _cell(m.get(key), m.get(f"{key}_sem")) for key, _ in TABLE_METRICS})
            row["n"] = str(m.get("n_pairs", "—"))
            change = m.get("lpips_history_change_vs_none")
            row["change"] = "—" if change is None else f"{100 * change:+.1f}%"
        tables[v.table].append(row)
    return tables


def ablation_markdown(
    scenario: str,
    metrics: Mapping[str, Mapping],
    variant_list: Sequence[Variant],
    skipped: Mapping[str, str],
    ground_truth: Mapping[str, Mapping] | None = None,
) -> str:
    """The ablation tables of one scenario as Markdown (for the README)."""
    lines: list[str] = []
    header = ["Variant", "n", *[title for _, title in TABLE_METRICS], "History LPIPS vs none"]
    for table, rows in ablation_tables(metrics, variant_list, skipped).items():
        if not rows:
            continue
        lines += [f"### {scenario} — {TABLES[table]}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            label = row["label"] + (f" *(skipped: {row['skipped']})*" if row["skipped"] else "")
            cells = [md_escape(label), row["n"], *[row[key] for key, _ in TABLE_METRICS], row["change"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += statistics_markdown(scenario, metrics, variant_list)
    if ground_truth:
        lines += [f"### {scenario} — latent preference recovered (default world)", ""]
        checks = sorted({k for entry in ground_truth.values() for k in entry if not k.startswith("n_")})
        lines.append("| Variant | " + " | ".join(checks) + " |")
        lines.append("|---|" + "|".join(["---:"] * len(checks)) + "|")
        for name, entry in ground_truth.items():
            cells = []
            for check in checks:
                value = entry.get(check)
                count = entry.get(f"n_{check}")
                cells.append("—" if value is None else f"{value:.2f} (n={count})")
            lines.append(f"| {md_escape(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "LPIPS: lower = more similar; SSIM: higher = more similar; mean ± standard error over pairs "
        "(a pair's history value is the mean over its history images)."
    )
    return "\n".join(lines) + "\n"
