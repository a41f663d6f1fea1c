"""DVC stage `describe`: behaviour to text for one scenario (PMG step 1).

Writes `<describe.out>/<scenario>.parquet` (a validated `Descriptions` table)
and `metrics/describe/<scenario>.json`. LLM summaries and captions go through
the content-addressed cache `describe.llm_cache`, so a re-run is free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pmg import schemas
from pmg.config import Params
from pmg.io import write_json_atomic, write_table
from pmg.stages import models


def run(
    params: Params, scenario: str, *, metrics_dir: Path = Path("metrics/describe"), log: Callable[[str], object] = print
) -> dict:
    """Describe the selected users of one scenario; return the stage metrics."""
    from pmg.method.describe import run_describe

    llm = models.llm(params, batch_size=params.describe.batch_size)
    captioner = models.captioner(params) if params.describe.captions else None
    table = run_describe(params, scenario, llm=llm, captioner=captioner)
    report = dict(table.attrs.get("report", {}))
    write_table(table, Path(params.describe.out) / f"{scenario}.parquet", schemas.Descriptions)
    metrics = {"users": int(table["user_id"].nunique()), "lines": len(table), **report}
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    log(f"describe {scenario}: {metrics}")
    return metrics
