"""Stage `evaluate`: LPIPS / SSIM of the chosen outputs against history and target.

Reads the scenario's candidates folder, its `Scores` table and the prepared
scenario, and writes

    <evaluate.out>/<scenario>/pairs.parquet         PairMetrics, one row per (output, reference image)
    <evaluate.out>/<scenario>/issues.parquet        EvalIssues: what was skipped or adjusted, and why
    <evaluate.out>/<scenario>/ground_truth.parquet  GroundTruthHits (default world; may have no rows)
    metrics/evaluate/<scenario>.json               flat DVC metrics (`pmg.evaluate.metrics.summarize`)
                                                   + `ground_truth` rates; `lpips_history` and
                                                   `lpips_target` are what the registry gates read
    plots/evaluate/<scenario>_weights.csv          the weight case study, long format (DVC plot)
    plots/evaluate/<scenario>_weights.svg          the same as a small chart

Metrics and plots live outside the output folder (as every stage's do), so
DVC can track them with `cache: false` beside the folder. Every file is
written atomically; a pair that cannot be measured is counted in the
metrics, never a crash. `measure` and `write_evaluation_tables` are shared with the
ablations stage, so both evaluate outputs the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pmg import schemas
from pmg.config import Params
from pmg.io import output_folder, read_table, write_json_atomic, write_table, write_text_atomic
from pmg.stages import loaders
from pmg.stages.catalogue import CANDIDATES_TABLE, GROUND_TRUTH_TABLE, ISSUES_TABLE, PAIRS_TABLE, Catalogue


def measure(params: Params, scenario: str, requests: Sequence[Any], metric_models: Any) -> Any:
    """LPIPS / SSIM of `requests` under the `evaluate` section (one batched pass); an `Evaluation`."""
    from pmg.evaluate.metrics import evaluate_requests

    cfg = params.evaluate
    return evaluate_requests(
        requests,
        metric_models,
        scenario=scenario,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        chunk_users=cfg.chunk_users,
        chunk_pairs=cfg.chunk_pairs,
    )


def write_evaluation(folder: Path, evaluation: Any, hits: pd.DataFrame) -> None:
    """The per-pair metrics, the issues and the ground-truth rows, committed as `folder`.

    Through `pmg.io.output_folder`: all three tables or none replace the
    previous ones, and a second run of the stage waits for the first.
    """
    with output_folder(folder) as staging:
        write_evaluation_tables(staging, evaluation, hits)


def write_evaluation_tables(folder: Path, evaluation: Any, hits: pd.DataFrame) -> None:
    """The three tables of `write_evaluation`, written into an existing (staging) `folder`."""
    write_table(evaluation.pairs, folder / PAIRS_TABLE, schemas.PairMetrics)
    write_table(evaluation.issues, folder / ISSUES_TABLE, schemas.EvalIssues)
    write_table(hits, folder / GROUND_TRUTH_TABLE, schemas.GroundTruthHits)


def used_keywords(catalogue: Catalogue, scenario: str, users: pd.Series) -> pd.DataFrame | None:
    """The scenario's `Keywords` rows of `users` (None when the table does not exist)."""
    path = catalogue.keywords(scenario)
    if not path.is_file():
        return None
    keywords = read_table(path, schemas.Keywords)
    return keywords[keywords["user_id"].astype(str).isin(set(users.astype(str)))]


def run(
    params: Params,
    scenario: str,
    *,
    catalogue: Catalogue | None = None,
    metric_models: Any = None,
    log: Callable[[str], object] = print,
) -> dict:
    """Evaluate one scenario's chosen outputs (see the module docstring); return the metrics.

    Args:
        metric_models: loaded LPIPS networks (default: the profile's, for `evaluate.nets`).
    """
    from pmg.data.store import read_scenario
    from pmg.evaluate.ground_truth import ground_truth_hits, summarize_hits
    from pmg.evaluate.metrics import chosen_outputs, requests_from_outputs, summarize
    from pmg.evaluate.weights import case_study, case_study_csv, weights_svg

    catalogue = catalogue or Catalogue(params)
    cfg = params.evaluate
    prepared = read_scenario(catalogue.prepared(scenario))
    candidates_dir = catalogue.candidates(scenario)
    candidates = read_table(candidates_dir / CANDIDATES_TABLE, schemas.Candidates)
    scores = read_table(catalogue.scores(scenario), schemas.Scores)
    scores = scores[scores["scenario"] == scenario]
    candidates = candidates[candidates["scenario"] == scenario]
    if metric_models is None:
        metric_models = loaders.metric_models(params)

    outputs = chosen_outputs(scores, candidates, candidates_dir)
    # The main run has one variant (the `generate` switches); a table mixing
    # several (hand-made) is evaluated as one, under "pmg".
    variants = sorted(str(v) for v in outputs["variant"].dropna().unique())
    main_variant = variants[0] if len(variants) == 1 else "pmg"
    outputs["variant"] = main_variant
    evaluation = measure(params, scenario, requests_from_outputs(outputs, prepared, main_variant), metric_models)
    keywords = used_keywords(catalogue, scenario, outputs["user_id"])
    hits = ground_truth_hits(scenario, prepared, outputs=outputs, keywords=keywords)
    write_evaluation(catalogue.evaluation(scenario), evaluation, hits)

    metrics = summarize(evaluation, main_variant)
    metrics["image_size"] = cfg.image_size
    metrics["ground_truth"] = summarize_hits(hits)
    write_json_atomic(catalogue.metrics("evaluate", scenario), metrics)

    study = case_study(scores, pairs=cfg.case_study_pairs)
    write_text_atomic(catalogue.weights_csv(scenario), case_study_csv(study))
    write_text_atomic(catalogue.weights_svg(scenario), weights_svg(study))
    log(
        f"evaluate {scenario}: LPIPS to history {metrics.get('lpips_history')}, "
        f"to target {metrics.get('lpips_target')}, pairs {metrics.get('n_pairs')}, skipped {metrics.get('n_skipped')}"
    )
    return metrics
