"""Stage `keywords`: preference keywords k_p and target keywords k_t (PMG steps 2-3).

Reads the scenario's `Descriptions` table, writes its `Keywords` table and
`metrics/keywords/<scenario>.json`, with the number of LLM calls this run
made: with unchanged inputs the shared answer cache (`keywords.llm_cache`)
answers every prompt and the count is zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from pmg import schemas
from pmg.config import Params
from pmg.data.store import read_scenario
from pmg.io import read_table, write_json_atomic, write_table
from pmg.stages import loaders
from pmg.stages.catalogue import Catalogue


def extract_keywords(
    params: Params, scenario: str, descriptions: pd.DataFrame, items: pd.DataFrame, *, llm: Any
) -> tuple[pd.DataFrame, Any]:
    """The `Keywords` table and `KeywordsReport` of every user in `descriptions`, the LLM behind the answer cache.

    Shared by the `keywords` stage and `pmg personalize`.
    """
    from pmg.method.keywords import run_keywords

    cfg = params.keywords
    return run_keywords(cfg, scenario, descriptions, items, llm=loaders.cached_llm(params, llm, cfg))


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Extract the keywords of one scenario's described users; return the stage metrics."""
    catalogue = catalogue or Catalogue(params)
    descriptions = read_table(catalogue.descriptions(scenario), schemas.Descriptions)
    llm = loaders.llm(params, batch_size=params.keywords.batch_size) if params.keywords.use_llm else None
    items = read_scenario(catalogue.prepared(scenario)).items
    table, report = extract_keywords(params, scenario, descriptions, items, llm=llm)
    write_table(table, catalogue.keywords(scenario), schemas.Keywords)
    metrics = {"users": len(table), **report.as_dict()}
    write_json_atomic(catalogue.metrics("keywords", scenario), metrics)
    log(f"keywords {scenario}: {metrics}")
    return metrics
