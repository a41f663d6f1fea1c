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
them. `metrics/report.json` gathers every scenario's metrics and their
pair-weighted overall (`pmg.evaluate.stage.summarize_scenarios`); the other
metrics and plots are read where `pmg.evaluate.stage.Locations` puts them.

Beside the HTML: `<report.out>/headline.md`, PMG vs no personalisation per
scenario from the ablation metrics (`headline_markdown`), and
`report.grid_png`, a small PNG of each scenario's first gallery pair for the
README (`pmg.evaluate.gallery_png`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from pmg.config import Params
from pmg.io import read_table, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

PAIR = ["user_id", "scenario", "target_item"]
OVERALL_KEYS = (
    "lpips_alex_history",
    "lpips_vgg_history",
    "ssim_history",
    "lpips_alex_target",
    "lpips_vgg_target",
    "ssim_target",
    "n_pairs",
    "n_skipped",
)
GROUND_TRUTH_NOTES = {
    "clothing": (
        "Share of outputs whose garment colour / pattern, measured on the pixels, is the user's latent "
        "preferred one; *_target_differs: only pairs whose target item has another colour / pattern "
        "(where personalisation must change the image). target_image: the target item's own image."
    ),
    "movies": (
        "Genres named by the keywords vs the genres of the user's history items: precision (of the genres "
        "named) and recall (of the history's genres). target_keywords = the non-personalised baseline."
    ),
    "emoji": (
        "Share of users whose keywords mention their latent character and the conversation's emotion; "
        "*_target_differs: only users whose target emoji shows another character / emotion."
    ),
}


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


def read_rgb(path: str | Path | None) -> Image.Image | None:
    """The image at `path` as RGB, or None when there is none or it cannot be read."""
    if path is None:
        return None
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError):
        return None


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


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("report: %s is not valid JSON; left out", path)
        return None


def _ablation_metrics(locations, scenario: str) -> dict[str, dict]:
    """`{variant: {metric: value}}` of the scenario's ablation runs (empty when not run)."""
    return (_read_json(locations.ablation_metrics(scenario)) or {}).get(scenario) or {}


def _table_or_none(path: Path, schema) -> pd.DataFrame | None:
    return read_table(path, schema) if path.is_file() else None


def _natural(value: str) -> tuple:
    from pmg.method.describe import natural_key

    return natural_key(value)


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
        key=lambda k: (_natural(k[0]), _natural(k[1])),
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


def _ablation_outputs(
    ablation_dir: Path, scenario: str
) -> dict[tuple[str, str], list[tuple[str, Path | None]]]:
    """(user, target) -> [(variant, chosen image)] from the ablation runs (empty when none)."""
    from pmg.schemas import Candidates, Scores

    report = _read_json(ablation_dir / "report.json")
    out: dict[tuple[str, str], list[tuple[str, Path | None]]] = {}
    if not report:
        return out
    for name in report.get("variants", []):
        run = report.get("runs", {}).get(name)
        if not run:
            continue
        folder = ablation_dir / "runs" / run / scenario
        scores = _table_or_none(folder / "scores.parquet", Scores)
        candidates = _table_or_none(folder / "candidates.parquet", Candidates)
        if scores is None or candidates is None:
            continue
        chosen = scores[scores["chosen"]].merge(
            candidates[[*PAIR, "candidate", "image_path"]], on=[*PAIR, "candidate"], how="left"
        )
        for row in chosen.itertuples(index=False):
            path = None if pd.isna(row.image_path) else folder / str(row.image_path)
            out.setdefault((str(row.user_id), str(row.target_item)), []).append((name, path))
    return out


def scenario_section(params: Params, scenario: str, *, locations) -> dict:
    """Everything the template shows for one scenario (missing inputs give empty parts)."""
    from markupsafe import Markup

    from pmg.data.store import read_scenario
    from pmg.evaluate.ablations import TABLES, ablation_tables, variants
    from pmg.evaluate.weights import read_case_study, weights_svg
    from pmg.schemas import Candidates, Keywords, PairMetrics, Scores

    eval_dir = Path(params.evaluate.out) / scenario
    abl_dir = Path(params.evaluate.ablations_out) / scenario
    metrics = _read_json(locations.evaluate_metrics(scenario)) or {}
    prepared_dir = Path(params.prepare.out) / scenario
    prepared = read_scenario(prepared_dir) if (prepared_dir / "items.parquet").is_file() else None

    ablation_metrics = _ablation_metrics(locations, scenario)
    ablation_report = _read_json(abl_dir / "report.json") or {}
    tables = []
    if ablation_metrics or ablation_report:
        rows = ablation_tables(ablation_metrics, variants(params), ablation_report.get("skipped", {}))
        tables = [{"title": TABLES[name], "rows": r} for name, r in rows.items() if r]

    ground_truth: dict[str, dict] = {}
    for name, entry in (metrics.get("ground_truth") or {}).items():
        ground_truth[f"main run: {name}"] = entry
    ablation_truth = (_read_json(locations.ablation_ground_truth(scenario)) or {}).get(scenario) or {}
    order = {v.name: k for k, v in enumerate(variants(params))}  # the tables' row order, extras last
    for name in sorted(ablation_truth, key=lambda n: (order.get(n, len(order)), n)):
        ground_truth[f"ablation: {name}"] = ablation_truth[name]
    checks = sorted({k for e in ground_truth.values() for k in e if not k.startswith("n_")})

    candidates_dir = Path(params.generate.out) / scenario
    gallery = []
    if prepared is not None:
        gallery = _gallery(
            params,
            scenario,
            prepared,
            scores=_table_or_none(Path(params.select.out) / f"{scenario}.parquet", Scores),
            candidates=_table_or_none(candidates_dir / "candidates.parquet", Candidates),
            candidates_dir=candidates_dir,
            keywords=_table_or_none(Path(params.keywords.out) / f"{scenario}.parquet", Keywords),
            pair_metrics=_table_or_none(eval_dir / "pairs.parquet", PairMetrics),
            ablation_outputs=_ablation_outputs(abl_dir, scenario),
        )
    variant_name = ""
    pairs_file = eval_dir / "pairs.parquet"
    if pairs_file.is_file():
        names = read_table(pairs_file, PairMetrics)["variant"].unique()
        variant_name = ", ".join(sorted(map(str, names)))
    return {
        "name": scenario,
        "metrics": metrics,
        "variant": variant_name or "—",
        "skipped_text": _reason_text(metrics.get("skipped")),
        "adjusted_text": _reason_text(metrics.get("adjusted")),
        "ablation_tables": tables,
        "ground_truth": list(ground_truth.items()),
        "ground_truth_checks": checks,
        "ground_truth_note": GROUND_TRUTH_NOTES.get(scenario, ""),
        "weights_svg": Markup(weights_svg(read_case_study(locations.weights_csv(scenario)))),
        "gallery": gallery,
    }


def render_report(params: Params, *, locations=None, sections: list[dict] | None = None) -> str:
    """The report's HTML text (see the module docstring); `sections` as `scenario_section` gives them."""
    import jinja2

    from pmg.evaluate.ablations import TABLE_METRICS
    from pmg.evaluate.stage import Locations, summarize_scenarios
    from pmg.evaluate.templates import FIGURE_MACRO, REPORT_TEMPLATE

    locations = locations or Locations()
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    macro = env.from_string(FIGURE_MACRO).make_module({"size": params.report.thumbnail})
    template = env.from_string(REPORT_TEMPLATE)
    summary = summarize_scenarios(params, locations=locations)
    return template.render(
        title=params.report.title,
        profile=params.base.profile,
        image_size=params.evaluate.image_size,
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        scenarios=(
            sections
            if sections is not None
            else [scenario_section(params, s, locations=locations) for s in params.base.scenarios]
        ),
        overall=summary.get("overall") or {},
        overall_keys=OVERALL_KEYS,
        ablation_headers=[title for _, title in TABLE_METRICS],
        ablation_keys=[key for key, _ in TABLE_METRICS],
        fmt=_fmt,
        fmt_rate=_fmt_rate,
        figure=macro.figure,
    )


# ------------------------------------------------------------------ headline

HEADLINE_FILE = "headline.md"
HEADLINE_COLUMNS = (
    "Scenario",
    "PMG variant",
    "History LPIPS-Alex, none",
    "History LPIPS-Alex, PMG",
    "Change vs none",
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
    from pmg.evaluate.ablations import BASELINE

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
        _fmt(none.get("lpips_alex_target")),
        _fmt(pmg.get("lpips_alex_target")),
        _fmt(pmg.get("ssim_history")),
        _fmt(pmg.get("ssim_target")),
        _fmt(pmg.get("n_pairs")),
    ]


def headline_markdown(params: Params, *, locations=None) -> str:
    """PMG vs no personalisation per scenario, as a Markdown table (from the ablation metrics).

    The ablation runs generate the same pairs with the same seeds for every
    variant, so the two columns differ only in the conditioning.
    """
    from pmg.evaluate.ablations import _md_escape
    from pmg.evaluate.stage import Locations

    locations = locations or Locations()
    lines = [
        "| " + " | ".join(HEADLINE_COLUMNS) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(HEADLINE_COLUMNS) - 2)) + "|",
    ]
    for scenario in params.base.scenarios:
        metrics = _ablation_metrics(locations, scenario)
        row = headline_row(scenario, pmg_variant(params, scenario, metrics), metrics)
        lines.append("| " + " | ".join(_md_escape(cell) for cell in row) + " |")
    lines += [
        "",
        "LPIPS: lower = more similar; SSIM: higher = more similar; means over the ablation pairs. "
        "Change vs none: PMG's history LPIPS relative to no personalisation "
        "(negative = closer to the user's history = more personalised).",
    ]
    return "\n".join(lines) + "\n"


def run_report(params: Params, *, out_dir: str | Path | None = None, locations=None) -> Path:
    """The `report` stage: write `<report.out>/index.html`, `<report.out>/headline.md`,
    `report.grid_png` and `metrics/report.json` (each atomically).

    Args:
        params: all parameters.
        out_dir: default `report.out`.
        locations: a `pmg.evaluate.stage.Locations` (default `metrics/`, `plots/`).

    Returns:
        The path of `index.html`.
    """
    from pmg.evaluate.gallery_png import write_gallery_png
    from pmg.evaluate.stage import Locations, summarize_scenarios

    locations = locations or Locations()
    out = Path(out_dir or params.report.out)
    sections = [scenario_section(params, s, locations=locations) for s in params.base.scenarios]
    html_text = render_report(params, locations=locations, sections=sections)
    index = out / "index.html"
    write_text_atomic(index, html_text)
    write_text_atomic(out / HEADLINE_FILE, headline_markdown(params, locations=locations))
    # The grid shows the first pair the HTML gallery shows, per scenario.
    write_gallery_png(
        [(s["name"], s["gallery"][0] if s["gallery"] else None) for s in sections],
        params.report.grid_png,
        tile=params.report.grid_tile,
    )
    write_json_atomic(locations.report_metrics(), summarize_scenarios(params, locations=locations))
    log.info("report: %s (%.0f kB)", index, len(html_text) / 1024)
    return index
