"""Stage `describe`: behaviour to text for one scenario (PMG step 1).

Writes the scenario's `Descriptions` table and `metrics/describe/<scenario>.json`.
LLM summaries and captions go through the content-addressed cache
`describe.llm_cache`, so a re-run is free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from pmg import schemas
from pmg.config import Params
from pmg.data.store import PreparedScenario, read_scenario
from pmg.io import write_json_atomic, write_table
from pmg.stages import loaders
from pmg.stages.catalogue import Catalogue


def describe_users(
    params: Params, prepared: PreparedScenario, users: Sequence[str], *, llm: Any, captioner: Any
) -> tuple[pd.DataFrame, Any]:
    """The `Descriptions` rows of `users` and the `DescribeReport`, the models wrapped in the answer cache.

    The one sequence the `describe` stage and `pmg personalize` share: the
    captioner gets the scenario's vocabulary, both models their cache
    (`describe.llm_cache`), then `pmg.method.describe.describe` runs.
    """
    from pmg.method.describe import describe, with_vocabulary

    cfg = params.describe
    captioner = loaders.cached_captioner(params, with_vocabulary(captioner, prepared, cfg))
    return describe(prepared, users, llm=loaders.cached_llm(params, llm, cfg), captioner=captioner, cfg=cfg)


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Describe the selected users of one scenario (`describe.max_users`, the first by id); return the metrics."""
    from pmg.method.describe import select_users

    catalogue = catalogue or Catalogue(params)
    llm = loaders.llm(params, batch_size=params.describe.batch_size)
    captioner = loaders.captioner(params) if params.describe.captions else None
    prepared = read_scenario(catalogue.prepared(scenario))
    users = select_users(prepared.splits, params.describe.max_users)
    table, report = describe_users(params, prepared, users, llm=llm, captioner=captioner)
    write_table(table, catalogue.descriptions(scenario), schemas.Descriptions)
    metrics = {"users": int(table["user_id"].nunique()), "lines": len(table), **report.as_dict()}
    write_json_atomic(catalogue.metrics("describe", scenario), metrics)
    log(f"describe {scenario}: {metrics}")
    return metrics
