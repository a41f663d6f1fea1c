"""DVC stage `select`: CLIP scores of every candidate and the best one (PMG step 6).

Writes `<select.out>/<scenario>.parquet` (a validated `Scores` table, exactly
one chosen candidate per (user, target)) and `metrics/select/<scenario>.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pmg import schemas
from pmg.config import Params
from pmg.io import read_table, write_json_atomic, write_table
from pmg.stages import models


def run(
    params: Params, scenario: str, *, metrics_dir: Path = Path("metrics/select"), log: Callable[[str], object] = print
) -> dict:
    """Score and select the candidates of one scenario; return the stage metrics."""
    from pmg.method.select import run_select

    candidates_dir = Path(params.generate.out) / scenario
    candidates = read_table(candidates_dir / "candidates.parquet", schemas.Candidates)
    scores = run_select(params, scenario, candidates, scorer=models.scorer(params), candidates_dir=candidates_dir)
    report = dict(scores.attrs.get("report", {}))
    write_table(scores, Path(params.select.out) / f"{scenario}.parquet", schemas.Scores)
    metrics = {"pairs": int(scores["chosen"].sum()), **report}
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    log(f"select {scenario}: {metrics}")
    return metrics
