"""The `evaluate` stage: metrics of the main run's chosen outputs, per scenario.

Reads `<generate.out>/<scenario>/candidates.parquet` (Candidates; image paths
relative to that folder), `<select.out>/<scenario>.parquet` (Scores) and the
prepared scenario, and writes

    <evaluate.out>/<scenario>/pairs.parquet         PairMetrics, one row per (output, reference image)
    <evaluate.out>/<scenario>/issues.parquet        EvalIssues: what was skipped or adjusted, and why
    <evaluate.out>/<scenario>/ground_truth.parquet  GroundTruthHits (default world; may have no rows)
    metrics/evaluate/<scenario>.json               flat DVC metrics (`pmg.evaluate.metrics.summarize`)
                                                   + `ground_truth` rates; `lpips_history` and
                                                   `lpips_target` are what the registry gates read
    plots/evaluate/<scenario>_weights.csv          the weight case study, long format (DVC plot)
    plots/evaluate/<scenario>_weights.svg          the same as a small chart

Metrics and plots live outside the output folder (as every stage's do, under
`metrics/<stage>/`), so DVC can track them with `cache: false` beside the
folder. Every file is written atomically; a pair that cannot be measured is
counted in the metrics, never a crash. :class:`Locations` names every path
the evaluation, ablation and report stages share.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pmg.config import Params
from pmg.evaluate.ground_truth import clothing_hits, emoji_hits, movies_hits, summarize_hits
from pmg.evaluate.metrics import EvalRequest, MetricModels, evaluate_requests, load_metric_models, summarize
from pmg.evaluate.weights import case_study, write_case_study
from pmg.io import read_table, validate, write_json_atomic, write_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Locations:
    """Where the evaluation's DVC metrics and plots go (relative to the repository root by default).

    Attributes:
        metrics_root: the project's metrics folder (`metrics/`).
        plots_root: the project's plots folder (`plots/`).
    """

    metrics_root: Path = Path("metrics")
    plots_root: Path = Path("plots")

    def evaluate_metrics(self, scenario: str) -> Path:
        return self.metrics_root / "evaluate" / f"{scenario}.json"

    def ablation_metrics(self, scenario: str) -> Path:
        """`{scenario: {variant: {metric: value}}}`."""
        return self.metrics_root / "ablations" / f"{scenario}.json"

    def ablation_ground_truth(self, scenario: str) -> Path:
        """`{scenario: {variant or keyword source: {check: rate}}}`."""
        return self.metrics_root / "ablations" / f"{scenario}_ground_truth.json"

    def weights_csv(self, scenario: str) -> Path:
        return self.plots_root / "evaluate" / f"{scenario}_weights.csv"

    def weights_svg(self, scenario: str) -> Path:
        return self.plots_root / "evaluate" / f"{scenario}_weights.svg"

    def report_metrics(self) -> Path:
        """Every scenario's metrics and their overall (written by the report stage)."""
        return self.metrics_root / "report.json"


PAIR = ["user_id", "scenario", "target_item"]


def ground_truth_hits(
    scenario: str, prepared, *, outputs: pd.DataFrame | None = None, keywords: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The scenario's ground-truth checks (see `pmg.evaluate.ground_truth`), validated.

    Clothing needs the `GroundTruth` table (default world) and `outputs`
    (`variant`, `user_id`, `target_item`, `image`); movies and emoji read the
    `keywords`. Anything unavailable gives no rows.
    """
    from pmg.evaluate.ground_truth import HIT_COLUMNS
    from pmg.schemas import GroundTruthHits

    frame = pd.DataFrame(columns=HIT_COLUMNS)
    if scenario == "clothing" and prepared.ground_truth is not None and outputs is not None and len(outputs):
        frame = clothing_hits(outputs, prepared)
    elif scenario == "movies" and keywords is not None and len(keywords):
        frame = movies_hits(keywords, prepared)
    elif scenario == "emoji" and prepared.ground_truth is not None and keywords is not None and len(keywords):
        frame = emoji_hits(keywords, prepared)
    return validate(frame, GroundTruthHits, f"ground truth[{scenario}]")


def chosen_outputs(scores: pd.DataFrame, candidates: pd.DataFrame, candidates_dir: Path) -> pd.DataFrame:
    """One row per scored pair: the chosen candidate's variant and absolute image path (None when missing).

    A chosen candidate absent from the Candidates table (tables out of step)
    keeps its pair with no image, so it is counted as `output_missing`.
    """
    chosen = scores.loc[scores["chosen"], [*PAIR, "candidate"]]
    merged = chosen.merge(
        candidates[[*PAIR, "candidate", "variant", "image_path"]], on=[*PAIR, "candidate"], how="left"
    )
    merged["image"] = [None if pd.isna(p) else candidates_dir / str(p) for p in merged["image_path"]]
    return merged


def requests_from_outputs(outputs: pd.DataFrame, prepared, default_variant: str) -> list[EvalRequest]:
    """EvalRequests of chosen outputs against the prepared history and target images."""
    history_of = {
        str(u): json.loads(h) for u, h in zip(prepared.splits["user_id"], prepared.splits["history_items"])
    }

    def image_of(item: str) -> Path | None:
        try:
            return prepared.image_file(item)
        except Exception:  # noqa: BLE001 - unknown item: counted as a missing image
            return None

    requests = []
    for row in outputs.itertuples(index=False):
        user, target = str(row.user_id), str(row.target_item)
        variant = default_variant if pd.isna(getattr(row, "variant", None)) else str(row.variant)
        history = tuple((item, image_of(item)) for item in history_of.get(user, []))
        requests.append(EvalRequest(user, target, row.image, history, image_of(target), variant))
    return requests


def run_evaluate(
    params: Params,
    scenario: str,
    *,
    metric_models: MetricModels | None = None,
    candidates_dir: str | Path | None = None,
    scores_path: str | Path | None = None,
    keywords_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    locations: Locations = Locations(),
) -> dict:
    """The `evaluate` stage of one scenario (see the module docstring).

    Args:
        params: all parameters (`evaluate`, `prepare.out`, `generate.out`,
            `select.out`, `keywords.out`, the profile's `lpips`).
        scenario: the scenario.
        metric_models: loaded LPIPS networks (default: the profile's, for
            `evaluate.nets`).
        candidates_dir: folder of `candidates.parquet` (default `<generate.out>/<scenario>`).
        scores_path: the Scores table (default `<select.out>/<scenario>.parquet`).
        keywords_path: the Keywords table (default `<keywords.out>/<scenario>.parquet`;
            only the ground-truth checks of movies / emoji read it; missing is fine).
        out_dir: default `<evaluate.out>/<scenario>`.
        locations: where the metrics and plots go (default `metrics/`, `plots/`).

    Returns:
        The metrics written to `metrics/evaluate/<scenario>.json`.
    """
    from pmg.data.store import read_scenario
    from pmg.schemas import Candidates, EvalIssues, GroundTruthHits, Keywords, PairMetrics, Scores

    cfg = params.evaluate
    prepared = read_scenario(Path(params.prepare.out) / scenario)
    candidates_dir = Path(candidates_dir or Path(params.generate.out) / scenario)
    candidates = read_table(candidates_dir / "candidates.parquet", Candidates)
    scores = read_table(scores_path or Path(params.select.out) / f"{scenario}.parquet", Scores)
    scores = scores[scores["scenario"] == scenario]
    candidates = candidates[candidates["scenario"] == scenario]
    if metric_models is None:
        profile = params.profile
        metric_models = load_metric_models(
            profile.lpips, profile.device, nets=cfg.nets, key=f"profiles.{params.base.profile}.lpips"
        )

    outputs = chosen_outputs(scores, candidates, candidates_dir)
    # The main run has one variant (the `generate` switches); a table mixing
    # several (hand-made) is evaluated as one, under "pmg".
    variants = sorted(str(v) for v in outputs["variant"].dropna().unique())
    main_variant = variants[0] if len(variants) == 1 else "pmg"
    outputs["variant"] = main_variant
    requests = requests_from_outputs(outputs, prepared, main_variant)
    evaluation = evaluate_requests(
        requests,
        metric_models,
        scenario=scenario,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        chunk_users=cfg.chunk_users,
        chunk_pairs=cfg.chunk_pairs,
    )
    out = Path(out_dir or Path(cfg.out) / scenario)
    write_table(evaluation.pairs, out / "pairs.parquet", PairMetrics)
    write_table(evaluation.issues, out / "issues.parquet", EvalIssues)

    keywords = None
    keywords_file = Path(keywords_path or Path(params.keywords.out) / f"{scenario}.parquet")
    if keywords_file.is_file():
        keywords = read_table(keywords_file, Keywords)
        keywords = keywords[keywords["user_id"].astype(str).isin(set(outputs["user_id"].astype(str)))]
    hits = ground_truth_hits(scenario, prepared, outputs=outputs, keywords=keywords)
    write_table(hits, out / "ground_truth.parquet", GroundTruthHits)

    metrics = summarize(evaluation, main_variant)
    metrics["image_size"] = cfg.image_size
    metrics["ground_truth"] = summarize_hits(hits)
    write_json_atomic(locations.evaluate_metrics(scenario), metrics)

    write_case_study(
        case_study(scores, pairs=cfg.case_study_pairs),
        locations.weights_csv(scenario),
        locations.weights_svg(scenario),
    )
    log.info(
        "evaluate[%s]: %d pairs, lpips_history %s, lpips_target %s, %d skipped",
        scenario,
        metrics["n_pairs"],
        metrics["lpips_history"],
        metrics["lpips_target"],
        metrics["n_skipped"],
    )
    return metrics


def summarize_scenarios(params: Params, *, locations: Locations = Locations()) -> dict:
    """Every scenario's evaluate metrics and their pair-weighted overall, nested for DVC.

    Returns:
        `{"overall": {...}, "<scenario>": {...}, ...}`: per scenario its
        metrics (without ground truth); overall, each `*_history` metric
        averaged over scenarios weighted by `n_history` (`*_target` by
        `n_target`), and the counts summed. Scenarios without a metrics file
        are left out.
    """
    per: dict[str, dict] = {}
    for scenario in params.base.scenarios:
        path = locations.evaluate_metrics(scenario)
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
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
