"""DVC stage `keywords`: preference keywords k_p and target keywords k_t (PMG steps 2-3).

Reads `<describe.out>/<scenario>.parquet`, writes `<keywords.out>/<scenario>.parquet`
(a validated `Keywords` table) and `metrics/keywords/<scenario>.json`, with the
number of LLM calls this run made: with unchanged inputs the shared answer
cache (`keywords.llm_cache`) answers every prompt and the count is zero.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pmg import schemas
from pmg.config import Params
from pmg.io import read_table, write_json_atomic, write_table
from pmg.stages import models


def run(
    params: Params, scenario: str, *, metrics_dir: Path = Path("metrics/keywords"), log: Callable[[str], object] = print
) -> dict:
    """Extract the keywords of one scenario's described users; return the stage metrics."""
    from pmg.method.keywords import run_keywords

    descriptions = read_table(Path(params.describe.out) / f"{scenario}.parquet", schemas.Descriptions)
    llm = models.llm(params, batch_size=params.keywords.batch_size)
    table = run_keywords(params, scenario, descriptions, llm=llm)
    report = dict(table.attrs.get("report", {}))
    write_table(table, Path(params.keywords.out) / f"{scenario}.parquet", schemas.Keywords)
    metrics = {"users": len(table), **report}
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    log(f"keywords {scenario}: {metrics}")
    return metrics
