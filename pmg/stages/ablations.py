"""DVC stages `train_soft_ablations` and `ablations` (paper Tables 2 and 3).

`train_ablation_adapters` trains the extra soft adapters the Table 3 variants
need (`L<n>` with the prefix, and `L` = `train_soft.num_tokens` without it)
into `<evaluate.ablation_adapters>/<scenario>/<key>/`; `run` generates,
selects and evaluates every variant of `evaluate.ablations` on the same pairs
and seeds (see `pmg.evaluate.ablations`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pmg.config import Params
from pmg.io import write_json_atomic


def extra_adapter_settings(params: Params) -> dict[str, dict]:
    """Adapter key -> `train_soft` overrides for each variant not served by the main adapter."""
    main = params.train_soft
    wanted: dict[str, dict] = {}
    for variant in params.evaluate.ablations:
        if variant == "no_prefix":
            wanted[f"L{main.num_tokens}-noprefix"] = {"use_prefix": False}
        elif (match := re.fullmatch(r"L(\d+)", variant)) and int(match.group(1)) not in (0, main.num_tokens):
            wanted[f"L{match.group(1)}-{'prefix' if main.use_prefix else 'noprefix'}"] = {
                "num_tokens": int(match.group(1))
            }
    return wanted


def train_ablation_adapters(
    params: Params, scenario: str, *, metrics_dir: Path = Path("metrics/train_soft_ablations"), log=print
) -> dict:
    """Train the extra adapters of one scenario; return their training metrics."""
    from pmg.stages.train_soft import train_scenario

    root = Path(params.evaluate.ablation_adapters) / scenario
    root.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict] = {}
    if scenario in params.train_soft.scenarios:
        for key, update in extra_adapter_settings(params).items():
            cfg = params.train_soft.model_copy(update=update)
            result = train_scenario(params, scenario, out=root / key, cfg=cfg, log=log)
            metrics[key] = result.metrics
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    log(f"train_soft_ablations {scenario}: {sorted(metrics) or 'none (no adapter for this scenario)'}")
    return metrics


def run(params: Params, scenario: str, *, log: Callable[[str], object] = print) -> dict:
    """Run every ablation variant of one scenario; return the stage metrics."""
    from pmg.evaluate.ablations import run_ablation_stage

    metrics = run_ablation_stage(params, scenario)
    log(f"ablations {scenario}: {len(metrics)} entries")
    return metrics
