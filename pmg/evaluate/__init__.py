"""Evaluation and report (PMG §4): LPIPS / SSIM, ablations, ground truth, weight case study.

- `metrics`: LPIPS (AlexNet, VGG) and SSIM of chosen outputs against history
  and target images, batched with per-image feature reuse; bad input counted.
- `stage`: `run_evaluate(params, scenario)` — the `evaluate` stage.
- `ablations`: the paper's Table 2 / 3 variants on the same pairs and seeds;
  `run_ablation_stage(params, scenario)`.
- `ground_truth`: default-world checks of the latent preferences (pixels for
  clothing, keywords for movies and emoji), never CLIP.
- `weights`: the weight case study (d_p, d_t, z over w_p:w_t) as CSV + SVG.
- `report`: `run_report(params)` — one self-contained HTML report, plus
  `headline.md` (PMG vs no personalisation) and the README's PNG grid
  (`gallery_png`).
"""

from pmg.evaluate.ablations import (
    AblationModels,
    AblationResult,
    Variant,
    default_adapters,
    run_ablation_stage,
    run_ablations,
    variants,
)
from pmg.evaluate.metrics import (
    EvalRequest,
    Evaluation,
    MetricModels,
    batched_pair_metrics,
    evaluate_requests,
    load_metric_models,
    naive_pair_metrics,
    summarize,
)
from pmg.evaluate.report import run_report
from pmg.evaluate.stage import run_evaluate, summarize_scenarios

__all__ = [
    "AblationModels",
    "AblationResult",
    "EvalRequest",
    "Evaluation",
    "MetricModels",
    "Variant",
    "batched_pair_metrics",
    "default_adapters",
    "evaluate_requests",
    "load_metric_models",
    "naive_pair_metrics",
    "run_ablation_stage",
    "run_ablations",
    "run_evaluate",
    "run_report",
    "summarize",
    "summarize_scenarios",
    "variants",
]
