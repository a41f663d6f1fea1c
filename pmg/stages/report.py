"""Stage `report`: one self-contained HTML report over all scenarios, a headline table, a PNG grid.

Reads what every earlier stage wrote (where the catalogue says; a stage not
run leaves its part of the report empty), renders with `pmg.evaluate.report`
and writes `index.html` and `headline.md` into the report folder, the
README's PNG grid (`report.grid_png`) and `metrics/report.json` (every
scenario's evaluate metrics and their pair-weighted overall).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pmg import schemas
from pmg.config import Params
from pmg.io import read_table, write_bytes_atomic, write_json_atomic, write_text_atomic
from pmg.stages.catalogue import (
    ABLATIONS_REPORT,
    CANDIDATES_TABLE,
    HEADLINE,
    PAIRS_TABLE,
    REPORT_INDEX,
    SCORES_TABLE,
    Catalogue,
)

logger = logging.getLogger(__name__)

PAIR = ["user_id", "scenario", "target_item"]


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("report: %s is not valid JSON; left out", path)
        return None


def _table_or_none(path: Path, schema) -> pd.DataFrame | None:
    return read_table(path, schema) if path.is_file() else None


def ablation_metrics(catalogue: Catalogue, scenario: str) -> dict[str, dict]:
    """`{variant: {metric: value}}` of the scenario's ablation runs (empty when not run)."""
    return (_read_json(catalogue.ablation_metrics(scenario)) or {}).get(scenario) or {}


def ablation_outputs(catalogue: Catalogue, scenario: str) -> dict[tuple[str, str], list[tuple[str, Path | None]]]:
    """(user, target) -> [(variant, chosen image)] from the ablation runs (empty when none)."""
    report = _read_json(catalogue.ablation_results(scenario) / ABLATIONS_REPORT)
    out: dict[tuple[str, str], list[tuple[str, Path | None]]] = {}
    if not report:
        return out
    for name in report.get("variants", []):
        run = report.get("runs", {}).get(name)
        if not run:
            continue
        folder = catalogue.ablation_run(scenario, run)
        scores = _table_or_none(folder / SCORES_TABLE, schemas.Scores)
        candidates = _table_or_none(folder / CANDIDATES_TABLE, schemas.Candidates)
        if scores is None or candidates is None:
            continue
        chosen = scores[scores["chosen"]].merge(
            candidates[[*PAIR, "candidate", "image_path"]], on=[*PAIR, "candidate"], how="left"
        )
        for row in chosen.itertuples(index=False):
            path = None if pd.isna(row.image_path) else folder / str(row.image_path)
            out.setdefault((str(row.user_id), str(row.target_item)), []).append((name, path))
    return out


def read_case_study(path: Path) -> pd.DataFrame:
    """The weight case study's long table (an empty one when the file is missing)."""
    from pmg.evaluate.weights import parse_case_study

    return parse_case_study(path.read_text(encoding="utf-8") if path.is_file() else "")


def scenario_inputs(params: Params, catalogue: Catalogue, scenario: str):
    """Everything the report shows of one scenario, read from where the stages wrote it."""
    from pmg.data.store import read_scenario
    from pmg.evaluate.report import ScenarioInputs

    prepared_dir = catalogue.prepared(scenario)
    candidates_dir = catalogue.candidates(scenario)
    return ScenarioInputs(
        name=scenario,
        metrics=_read_json(catalogue.metrics("evaluate", scenario)) or {},
        ablation_metrics=ablation_metrics(catalogue, scenario),
        ablation_report=_read_json(catalogue.ablation_results(scenario) / ABLATIONS_REPORT) or {},
        ablation_ground_truth=(_read_json(catalogue.ablation_ground_truth(scenario)) or {}).get(scenario) or {},
        prepared=read_scenario(prepared_dir) if (prepared_dir / "items.parquet").is_file() else None,
        scores=_table_or_none(catalogue.scores(scenario), schemas.Scores),
        candidates=_table_or_none(candidates_dir / CANDIDATES_TABLE, schemas.Candidates),
        candidates_dir=candidates_dir,
        keywords=_table_or_none(catalogue.keywords(scenario), schemas.Keywords),
        pair_metrics=_table_or_none(catalogue.evaluation(scenario) / PAIRS_TABLE, schemas.PairMetrics),
        ablation_outputs=ablation_outputs(catalogue, scenario),
        case_study=read_case_study(catalogue.weights_csv(scenario)),
    )


def summarize_scenarios(params: Params, catalogue: Catalogue | None = None) -> dict:
    """Every scenario's evaluate metrics and their pair-weighted overall (`pmg.evaluate.report.overall_metrics`)."""
    from pmg.evaluate.report import overall_metrics

    catalogue = catalogue or Catalogue(params)
    per = {}
    for scenario in params.base.scenarios:
        data = _read_json(catalogue.metrics("evaluate", scenario))
        if data is not None:
            per[scenario] = data
    return overall_metrics(per)


def headline(params: Params, catalogue: Catalogue | None = None) -> str:
    """PMG vs no personalisation per scenario, from the ablation metrics (`pmg.evaluate.report.headline_markdown`)."""
    from pmg.evaluate.report import headline_markdown

    catalogue = catalogue or Catalogue(params)
    return headline_markdown(params, {s: ablation_metrics(catalogue, s) for s in params.base.scenarios})


def run(params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print) -> dict:
    """Write the report; return its path, the headline and the metrics of `metrics/report.json`."""
    from pmg.evaluate.gallery_png import gallery_png
    from pmg.evaluate.report import render_report, scenario_section

    catalogue = catalogue or Catalogue(params)
    sections = [scenario_section(params, scenario_inputs(params, catalogue, s)) for s in params.base.scenarios]
    summary = summarize_scenarios(params, catalogue)
    html_text = render_report(params, sections, summary.get("overall") or {})
    index = catalogue.report() / REPORT_INDEX
    write_text_atomic(index, html_text)
    text = headline(params, catalogue)
    write_text_atomic(catalogue.report() / HEADLINE, text)
    # The grid shows the first pair the HTML gallery shows, per scenario.
    write_bytes_atomic(
        catalogue.gallery_png(),
        gallery_png([(s["name"], s["gallery"][0] if s["gallery"] else None) for s in sections], tile=params.report.grid_tile),
    )
    write_json_atomic(catalogue.metrics("report"), summary)
    logger.info("report: %s (%.0f kB)", index, len(html_text) / 1024)
    log(f"report: {index.resolve()}")
    return {"report_path": str(index.resolve()), "headline": text, **summary}


def show(result: dict) -> None:
    """What `pmg report` prints after the report's path: the headline table and the overall figures."""
    overall = result.get("overall", {})
    print()
    print(result["headline"])
    if overall:
        values = ", ".join(f"{k} {v:.4f}" for k, v in overall.items() if isinstance(v, float))
        print(f"main run, all scenarios: {values}")
