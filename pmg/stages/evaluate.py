"""DVC stage `evaluate`: LPIPS / SSIM of the chosen outputs against history and target.

See `pmg.evaluate.stage` for what is written: per-pair rows and issues under
`<evaluate.out>/<scenario>/`, flat DVC metrics `metrics/evaluate/<scenario>.json`
(with `lpips_history` / `lpips_target`, the names the registry gates read),
ground-truth rates, and the weight case study under `plots/evaluate/`.
"""

from __future__ import annotations

from collections.abc import Callable

from pmg.config import Params


def run(params: Params, scenario: str, *, log: Callable[[str], object] = print) -> dict:
    """Evaluate one scenario's chosen outputs; return the stage metrics."""
    from pmg.evaluate.stage import run_evaluate

    metrics = run_evaluate(params, scenario)
    log(
        f"evaluate {scenario}: LPIPS to history {metrics.get('lpips_history')}, "
        f"to target {metrics.get('lpips_target')}, pairs {metrics.get('n_pairs')}"
    )
    return metrics
