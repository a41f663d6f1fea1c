"""The `report` stage: one self-contained HTML file per pipeline run.

`<report.out>/index.html` holds, per scenario: the main run's metrics, the
ablation tables (paper layout), the ground-truth rates, the weight case study
(inline SVG) and a gallery of pairs — history images, the target image, every
candidate with its weights and `d_p` / `d_t` / `z` (the chosen one ringed),
the ablation variants' outputs for the same pair, and the keywords.

Self-contained: images are embedded as PNG `data:` URIs (shrunk to
`report.thumbnail` px when larger; small generator outputs are embedded as
they are and scaled up by the browser without smoothing), CSS is inline,
links are in-page anchors; nothing is fetched. Text is escaped by Jinja2's
autoescaping. Missing inputs (a stage not run, an image gone) leave their
part of the report empty or marked "missing" — the report never fails for
them.

This module renders; the `report` stage (`pmg.stages.report`) reads every
input into a :class:`ScenarioInputs` per scenario and writes what comes out:
the HTML, `<report.out>/headline.md` (PMG vs no personalisation per
scenario from the ablation metrics, `headline_markdown`), `report.grid_png`
(a small PNG of each scenario's first gallery pair for the README,
`pmg.evaluate.gallery_png`) and `metrics/report.json` (every scenario's
metrics and their pair-weighted overall, `overall_metrics`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from pmg.config import Params
from pmg.evaluate.gallery_png import read_rgb
from pmg.evaluate.metrics import METRIC_COLUMNS, METRIC_LABELS, metric_headers
from pmg.scenarios import get as get_scenario
from pmg.text import md_escape, natural_key

log = logging.getLogger(__name__)

PAIR = ["user_id", "scenario", "target_item"]
OVERALL_KEYS = (*(key for key, _ in metric_headers()), "n_pairs", "n_skipped")


@dataclass
class Cell:
    """One image of the gallery: `src` a data URI (None = missing), caption lines, chosen ring.

    `path` (the image file, None when unknown) and `label` (at most two short
    lines) are what the PNG grid (`pmg.evaluate.gallery_png`) draws.
    """

    src: str | None
    alt: str
    caption: list[str] = field(default_factory=list)
    chosen: bool = False
    path: Path | None = None
    label: tuple[str, ...] = ()


@dataclass
class ScenarioInputs:
    """What the report shows of one scenario, as the `report` stage read it (None / empty = not run).

    Attributes:
        name: the scenario.
        metrics: its `evaluate` metrics (with `ground_truth`).
        ablation_metrics: `{variant: metrics}` of its ablation runs.
        ablation_report: the ablation stage's `report.json` (variants, runs, skipped).
        ablation_ground_truth: `{variant or keyword source: rates}` of the ablations.
        prepared: the `PreparedScenario`, or None.
        scores: the main run's `Scores` table.
        candidates: the main run's `Candidates` table.
        candidates_dir: the folder the candidates' image paths are relative to.
        keywords: the `Keywords` table.
        pair_metrics: the main run's `PairMetrics` table.
        ablation_outputs: (user, target) -> [(variant, chosen image path)].
        case_study: the weight case study's long table (`pmg.evaluate.weights`).
    """

    name: str
    metrics: dict = field(default_factory=dict)
    ablation_metrics: dict = field(default_factory=dict)
    ablation_report: dict = field(default_factory=dict)
    ablation_ground_truth: dict = field(default_factory=dict)
    prepared: object | None = None
    scores: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None
    candidates_dir: Path | None = None
    keywords: pd.DataFrame | None = None
    pair_metrics: pd.DataFrame | None = None
    ablation_outputs: dict[tuple[str, str], list[tuple[str, Path | None]]] = field(default_factory=dict)
    case_study: pd.DataFrame | None = None


def image_data_uri(path: str | Path | None, thumbnail: int) -> str | None:
    """A PNG data URI of the image (shrunk to fit `thumbnail` px when larger), or None when unreadable."""
    image = read_rgb(path)
    if image is None:
        return None
    if max(image.size) > thumbnail:
        image.thumbnail((thumbnail, thumbnail), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt_rate(value, count) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} (n={count})" if count is not None else f"{value:.2f}"


def _reason_text(counts: dict | None) -> str:
    counts = {k: v for k, v in (counts or {}).items() if v}
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _gallery(
    params: Params,
    scenario: str,
    prepared,
    *,
    scores: pd.DataFrame | None,
    candidates: pd.DataFrame | None,
    candidates_dir: Path,
    keywords: pd.DataFrame | None,
    pair_metrics: pd.DataFrame | None,
    ablation_outputs: dict[tuple[str, str], list[tuple[str, Path | None]]],
) -> list[dict]:
    cfg = params.report
    if scores is None or candidates is None or scores.empty or cfg.gallery_pairs == 0:
        return []
    merged = scores.merge(candidates[[*PAIR, "candidate", "image_path"]], on=[*PAIR, "candidate"], how="left")
    keys = sorted(
        {(str(u), str(t)) for u, t in zip(merged["user_id"], merged["target_item"])},
        key=lambda k: (natural_key(k[0]), natural_key(k[1])),
    )
    history_of = {
        str(u): json.loads(h) for u, h in zip(prepared.splits["user_id"], prepared.splits["history_items"])
    }
    title_of = dict(zip(prepared.items["item_id"].astype(str), prepared.items["title"].astype(str)))
    size = cfg.thumbnail

    def item_cell(item: str, caption: str) -> Cell:
        try:
            path = prepared.image_file(item)
        except Exception:  # noqa: BLE001 - unknown item: shown as missing
            path = None
        title = title_of.get(item, "")
        return Cell(
            image_data_uri(path, size),
            f"{caption} {item} {title}".strip(),
            [f"{item}", title[:28]],
            path=path,
            label=(caption, item) if caption == "target" else (item,),
        )

    gallery = []
    for user, target in keys[: cfg.gallery_pairs]:
        part = merged[(merged["user_id"].astype(str) == user) & (merged["target_item"].astype(str) == target)]
        part = part.sort_values("candidate")
        cells = []
        for row in part.itertuples(index=False):
            path = None if pd.isna(row.image_path) else candidates_dir / str(row.image_path)
            cells.append(
                Cell(
                    image_data_uri(path, size),
                    f"candidate {row.candidate}",
                    [
                        f"w_p:w_t = {row.w_p:g}:{row.w_t:g}",
                        f"d_p {row.d_p:.3f} · d_t {row.d_t:.3f}",
                        f"z {row.z:.3f}" + (" ✔ chosen" if row.chosen else ""),
                    ],
                    bool(row.chosen),
                    path=path,
                    label=(f"{row.w_p:g}:{row.w_t:g}", f"z {row.z:.2f}"),
                )
            )
        pref, targ = "", ""
        if keywords is not None:
            match = keywords[keywords["user_id"].astype(str) == user]
            if len(match):
                pref = ", ".join(json.loads(match["preference_keywords"].iloc[0]))
                targ = ", ".join(json.loads(match["target_keywords"].iloc[0]))
        metrics_text = ""
        if pair_metrics is not None and len(pair_metrics):
            mine = pair_metrics[
                (pair_metrics["user_id"].astype(str) == user)
                & (pair_metrics["target_item"].astype(str) == target)
            ]
            bits = []
            for ref in ("history", "target"):
                rows = mine[mine["reference"] == ref]
                if len(rows):
                    bits.append(
                        f"{ref}: LPIPS-Alex {rows['lpips_alex'].mean():.3f}, SSIM {rows['ssim'].mean():.3f}"
                    )
            metrics_text = "; ".join(bits)
        ablation_cells = [
            Cell(image_data_uri(path, size), f"variant {name}", [name])
            for name, path in ablation_outputs.get((user, target), [])
        ]
        gallery.append(
            {
                "user_id": user,
                "target_item": target,
                "target_title": title_of.get(target, ""),
                "preference_keywords": pref,
                "target_keywords": targ,
                "metrics": metrics_text,
                "history": [item_cell(item, "history") for item in history_of.get(user, [])],
                "target": item_cell(target, "target"),
                "candidates": cells,
                "ablations": ablation_cells,
            }
        )
    return gallery


def scenario_section(params: Params, inputs: ScenarioInputs) -> dict:
    """Everything the template shows for one scenario (missing inputs give empty parts)."""
    from markupsafe import Markup

    from pmg.evaluate.ablations import STATISTICS_NOTE, TABLES, ablation_tables, statistics_table, variants
    from pmg.evaluate.weights import LONG_COLUMNS, weights_svg

    scenario = inputs.name
    metrics = inputs.metrics or {}
    tables = []
    if inputs.ablation_metrics or inputs.ablation_report:
        rows = ablation_tables(
            inputs.ablation_metrics, variants(params), (inputs.ablation_report or {}).get("skipped", {})
        )
        tables = [{"title": TABLES[name], "rows": r} for name, r in rows.items() if r]
    statistics = statistics_table(inputs.ablation_metrics or {}, variants(params))
    headline = headline_row(
        scenario, pmg_variant(params, scenario, inputs.ablation_metrics or {}), inputs.ablation_metrics or {}
    )

    ground_truth: dict[str, dict] = {}
    for name, entry in (metrics.get("ground_truth") or {}).items():
        ground_truth[f"main run: {name}"] = entry
    ablation_truth = inputs.ablation_ground_truth or {}
    order = {v.name: k for k, v in enumerate(variants(params))}  # the tables' row order, extras last
    for name in sorted(ablation_truth, key=lambda n: (order.get(n, len(order)), n)):
        ground_truth[f"ablation: {name}"] = ablation_truth[name]
    checks = sorted({k for e in ground_truth.values() for k in e if not k.startswith("n_")})

    gallery = []
    if inputs.prepared is not None:
        gallery = _gallery(
            params,
            scenario,
            inputs.prepared,
            scores=inputs.scores,
            candidates=inputs.candidates,
            candidates_dir=Path(inputs.candidates_dir or "."),
            keywords=inputs.keywords,
            pair_metrics=inputs.pair_metrics,
            ablation_outputs=inputs.ablation_outputs,
        )
    variant_name = ""
    if inputs.pair_metrics is not None:
        variant_name = ", ".join(sorted(map(str, inputs.pair_metrics["variant"].unique())))
    case_study = inputs.case_study if inputs.case_study is not None else pd.DataFrame(columns=LONG_COLUMNS)
    return {
        "name": scenario,
        "metrics": metrics,
        "variant": variant_name or "—",
        "skipped_text": _reason_text(metrics.get("skipped")),
        "adjusted_text": _reason_text(metrics.get("adjusted")),
        "ablation_tables": tables,
        "statistics": statistics,
        "statistics_note": STATISTICS_NOTE,
        "headline": headline,
        "ground_truth": list(ground_truth.items()),
        "ground_truth_checks": checks,
        "ground_truth_note": get_scenario(scenario).ground_truth_note,
        "weights_svg": Markup(weights_svg(case_study)),
        "gallery": gallery,
    }


def render_report(params: Params, sections: list[dict], overall: Mapping) -> str:
    """The report's HTML text (see the module docstring); `sections` as `scenario_section` gives them."""
    import jinja2

    from pmg.evaluate.ablations import TABLE_METRICS
    from pmg.evaluate.templates import FIGURE_MACRO, REPORT_TEMPLATE

    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    macro = env.from_string(FIGURE_MACRO).make_module({"size": params.report.thumbnail})
    template = env.from_string(REPORT_TEMPLATE)
    return template.render(
        title=params.report.title,
        profile=params.base.profile,
        protocol=protocol_text(params),
        headline_columns=HEADLINE_COLUMNS,
        headline_note=HEADLINE_NOTE,
        image_size=params.evaluate.image_size,
        scenarios=sections,
        overall=overall or {},
        overall_keys=OVERALL_KEYS,
        ablation_headers=[title for _, title in TABLE_METRICS],
        ablation_keys=[key for key, _ in TABLE_METRICS],
        metric_columns=[(column, " ".join(METRIC_LABELS[column])) for column in METRIC_COLUMNS],
        fmt=_fmt,
        fmt_rate=_fmt_rate,
        figure=macro.figure,
    )


def overall_metrics(per_scenario: Mapping[str, Mapping]) -> dict:
    """Every scenario's evaluate metrics and their pair-weighted overall, nested for DVC.

    Args:
        per_scenario: `{scenario: its evaluate metrics}` (scenarios without
            metrics left out).

    Returns:
        `{"overall": {...}, "<scenario>": {...}, ...}`: per scenario its
        metrics (without ground truth); overall, each `*_history` metric
        averaged over scenarios weighted by `n_history` (`*_target` by
        `n_target`), and the counts summed.
    """
    per: dict[str, dict] = {}
    for scenario, data in per_scenario.items():
        data = dict(data)
        data.pop("ground_truth", None)
        per[scenario] = data
    overall: dict = {}
    if per:
        keys = [
            k
            for k in next(iter(per.values()))
            if k.endswith(("_history", "_target")) and not k.startswith("n_")
        ]
        for key in keys:
            weight_key = "n_history" if key.endswith("_history") else "n_target"
            pairs = [(m.get(key), m.get(weight_key, 0)) for m in per.values()]
            pairs = [(v, w) for v, w in pairs if v is not None and w]
            total = sum(w for _, w in pairs)
            overall[key] = round(sum(v * w for v, w in pairs) / total, 6) if total else None
        for key in ("n_pairs", "n_history", "n_target", "n_skipped"):
            overall[key] = int(sum(m.get(key, 0) for m in per.values()))
    return {"overall": overall, **per}


# ------------------------------------------------------------------ headline

HEADLINE_COLUMNS = (
    "Scenario",
    "PMG variant",
    "History LPIPS-Alex, none",
    "History LPIPS-Alex, PMG",
    "Change vs none",
    "History LPIPS-Alex, PMG − none [95% CI]",
    "Gap LPIPS-Alex, PMG (p)",
    "Gap, PMG − none [95% CI]",
    "Target LPIPS-Alex, none",
    "Target LPIPS-Alex, PMG",
    "History SSIM, PMG",
    "Target SSIM, PMG",
    "n pairs",
)


def pmg_variant(params: Params, scenario: str, ablation_metrics: dict) -> str:
    """The ablation variant standing for PMG in the headline.

    `soft+keywords` (the paper's full method) where the scenario trains an
    adapter (`train_soft.scenarios`), unless the ablations ran `keywords`
    but not it (no adapter was found); otherwise `keywords` — emoji trains
    none, as in the paper.
    """
    ran_without_adapter = "keywords" in ablation_metrics and "soft+keywords" not in ablation_metrics
    if scenario in params.train_soft.scenarios and not ran_without_adapter:
        return "soft+keywords"
    return "keywords"


def headline_row(scenario: str, variant: str, ablation_metrics: dict) -> list[str]:
    """One headline row: PMG (`variant`) vs `none`, from `{variant: metrics}`; "not run" if one is missing."""
    from pmg.evaluate.ablations import BASELINE, gap_cell, interval_cell

    pmg, none = ablation_metrics.get(variant), ablation_metrics.get(BASELINE)
    if not pmg or not none:
        return [scenario, variant, "not run", *[""] * (len(HEADLINE_COLUMNS) - 3)]
    ours, base = pmg.get("lpips_alex_history"), none.get("lpips_alex_history")
    change = "—" if ours is None or not base else f"{100 * (ours - base) / base:+.1f}%"
    return [
        scenario,
        variant,
        _fmt(base),
        _fmt(ours),
        change,
        interval_cell(pmg, "lpips_alex_history_diff_vs_none"),
        gap_cell(pmg, "gap_lpips_alex"),
        interval_cell(pmg, "gap_lpips_alex_diff_vs_none"),
        _fmt(none.get("lpips_alex_target")),
        _fmt(pmg.get("lpips_alex_target")),
        _fmt(pmg.get("ssim_history")),
        _fmt(pmg.get("ssim_target")),
        _fmt(pmg.get("n_pairs")),
    ]


HEADLINE_NOTE = (
    "LPIPS: lower = more similar; SSIM: higher = more similar; means over the ablation pairs. "
    "Change vs none: PMG's history LPIPS relative to no personalisation "
    "(negative = closer to the user's history = more personalised). "
    "PMG − none: the difference paired per test user, with its 95% percentile bootstrap interval "
    "over users. Gap: mismatched-user control, mean LPIPS of each output to another test user's "
    "history minus to its own (positive = personalised), one-sided permutation p-value; PMG "
    "personalises only if its gap is positive and larger than none's (the last interval above 0)."
)
"""The note under the headline table (README, `headline.md` and the HTML report)."""


def headline_markdown(params: Params, ablation_metrics: Mapping[str, Mapping]) -> str:
    """PMG vs no personalisation per scenario, as a Markdown table (from the ablation metrics).

    The ablation runs generate the same pairs with the same seeds for every
    variant, so the two columns differ only in the conditioning.

    Args:
        params: all parameters (`base.scenarios`, `train_soft.scenarios`).
        ablation_metrics: `{scenario: {variant: metrics}}` (a scenario not run: missing or empty).
    """
    lines = [
        "| " + " | ".join(HEADLINE_COLUMNS) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(HEADLINE_COLUMNS) - 2)) + "|",
    ]
    for scenario in params.base.scenarios:
        metrics = dict(ablation_metrics.get(scenario) or {})
        row = headline_row(scenario, pmg_variant(params, scenario, metrics), metrics)
        lines.append("| " + " | ".join(md_escape(cell) for cell in row) + " |")
    return "\n".join([*lines, "", HEADLINE_NOTE]) + "\n"


def protocol_text(params: Params) -> str:
    """The evaluation protocol in one paragraph, with the figures of `params` (the HTML report's).

    What is held out, the candidate budgets and selection rules, the
    generation seeds, the mismatched-user control and the intervals; the
    README's Results section says the same in prose.
    """
    split = params.prepare.user_split
    k = len(params.generate.weights)
    cfg = params.evaluate
    return (
        f"Users are split once by a hash of (scenario, user id) into train / validation / test "
        f"(expected shares {1 - split.validation - split.test:.0%} / {split.validation:.0%} / {split.test:.0%}). "
        "Adapters train on train users and report their held-out loss on validation users; every "
        "ablation figure comes from test users only, whose target items the mini zoo never trained on. "
        f"Equal budgets: every variant, none included, generates the same K = {k} candidates per pair "
        f"from the same seed (base.seed = {params.base.seed}; one generation seed); none keeps the "
        f"candidate closest to the target keywords (CLIP, alpha = 0), the personalised variants the "
        f"best z (alpha = {params.select.alpha}); each is also measured without selection (its middle "
        "candidate). Mismatched-user control: every output is also compared with another test user's "
        f"history (seeded derangement, control_seed = {cfg.control_seed}); the gap is tested by "
        f"{cfg.permutations} permutations. Differences against none and keywords are paired per test "
        f"user, with 95% percentile bootstrap intervals ({cfg.bootstrap_resamples} resamples)."
    )
