"""Stage `select`: CLIP scores of every candidate and the best one (PMG step 6).

Reads the scenario's candidates folder, writes its `Scores` table (exactly
one chosen candidate per (user, target)) and `metrics/select/<scenario>.json`.
`select_in` is the one way a candidates folder is scored: the main stage,
every ablation variant and `pmg personalize` call it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from pmg import schemas
from pmg.config import Params, SelectConfig
from pmg.io import read_table, write_json_atomic, write_table
from pmg.stages import loaders
from pmg.stages.catalogue import CANDIDATES_TABLE, Catalogue


def candidate_images(candidates: pd.DataFrame, folder: str | Path) -> list[Image.Image]:
    """The candidate images of a `Candidates` frame, in row order, as RGB."""
    folder = Path(folder)
    images = []
    for relative in candidates["image_path"]:
        with Image.open(folder / relative) as image:
            images.append(image.convert("RGB"))
    return images


def select_in(
    folder: Path, cfg: SelectConfig, scenario: str, candidates: pd.DataFrame, *, scorer: Any
) -> tuple[pd.DataFrame, Any]:
    """Score the candidates of `folder` (their images read from it); return the `Scores` table and report."""
    from pmg.method.select import select_candidates

    mine = candidates[candidates["scenario"] == scenario]
    return select_candidates(cfg, scenario, mine, candidate_images(mine, folder), scorer=scorer)


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Score and select the candidates of one scenario; return the stage metrics."""
    catalogue = catalogue or Catalogue(params)
    folder = catalogue.candidates(scenario)
    candidates = read_table(folder / CANDIDATES_TABLE, schemas.Candidates)
    scores, report = select_in(folder, params.select, scenario, candidates, scorer=loaders.scorer(params))
    write_table(scores, catalogue.scores(scenario), schemas.Scores)
    metrics = {"pairs": int(scores["chosen"].sum()), **report.as_dict()}
    write_json_atomic(catalogue.metrics("select", scenario), metrics)
    log(f"select {scenario}: {metrics}")
    return metrics
