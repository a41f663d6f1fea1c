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
from pmg.errors import DataError
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


def described_users(
    params: Params, scenario: str, splits: pd.DataFrame, *, where: object = "<splits>"
) -> list[str]:
    """The users the pipeline describes, under the evaluation protocol (see `DescribeConfig`).

    Raises:
        DataError: no test user would be described (nothing could be reported).
    """
    from pmg.method.describe import select_users_by_split

    cfg = params.describe
    if scenario in params.train_soft.scenarios:
        users = select_users_by_split(splits, cfg.max_users, max_test_users=cfg.max_test_users)
    else:  # no adapter learns from train users: only the evaluated ones
        budget = [n for n in (cfg.max_users, cfg.max_test_users) if n is not None]
        test = splits[splits["split"] == "test"]
        users = select_users_by_split(test, min(budget) if budget else None)
    split_of = dict(zip(splits["user_id"].astype(str), splits["split"]))
    if not any(split_of[user] == "test" for user in users):
        raise DataError(
            where,
            f"{scenario}: no test user among the {len(users)} described users; "
            "the split has none to report on"
        )
    return users


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Describe the selected users of one scenario (:func:`described_users`); return the metrics."""
    catalogue = catalogue or Catalogue(params)
    prepared = read_scenario(catalogue.prepared(scenario))
    users = described_users(params, scenario, prepared.splits, where=catalogue.prepared(scenario))
    llm = loaders.llm(params, batch_size=params.describe.batch_size)
    captioner = loaders.captioner(params) if params.describe.captions else None
    table, report = describe_users(params, prepared, users, llm=llm, captioner=captioner)
    write_table(table, catalogue.descriptions(scenario), schemas.Descriptions)
    split_of = dict(zip(prepared.splits["user_id"].astype(str), prepared.splits["split"]))
    by_split = pd.Series([split_of.get(str(u)) for u in table["user_id"].drop_duplicates()]).value_counts()
    metrics = {
        "users": int(table["user_id"].nunique()),
        **{f"users_{name}": int(by_split.get(name, 0)) for name in ("train", "validation", "test")},
        "lines": len(table),
        **report.as_dict(),
    }
    write_json_atomic(catalogue.metrics("describe", scenario), metrics)
    log(f"describe {scenario}: {metrics}")
    return metrics
