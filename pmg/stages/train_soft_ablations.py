"""Stage `train_soft_ablations`: the extra adapters the ablation variants need (paper Table 3).

`no_prefix` needs an adapter without P-Tuning v2 (`L<n>-noprefix`, `n` =
`train_soft.num_tokens`), `L<n>` one with `n` multimodal tokens; the main
`train_soft` adapter serves its own key. Each is trained exactly as the main
one (`pmg.stages.train_soft.train_adapter`) with the differing settings, into
its own folder under `evaluate.ablation_adapters`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pmg.config import Params
from pmg.io import write_json_atomic
from pmg.stages.catalogue import Catalogue
from pmg.stages.train_soft import train_adapter


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


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Train the extra adapters of one scenario; return their training metrics."""
    catalogue = catalogue or Catalogue(params)
    catalogue.ablation_adapters(scenario).mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict] = {}
    if scenario in params.train_soft.scenarios:
        for key, update in extra_adapter_settings(params).items():
            cfg = params.train_soft.model_copy(update=update)
            result = train_adapter(
                params, scenario, out=catalogue.ablation_adapter(scenario, key), catalogue=catalogue, cfg=cfg, log=log
            )
            metrics[key] = result.metrics
    write_json_atomic(catalogue.metrics("train_soft_ablations", scenario), metrics)
    log(f"train_soft_ablations {scenario}: {sorted(metrics) or 'none (no adapter for this scenario)'}")
    return metrics
