"""Stage `generate`: candidate images per (user, target) (PMG step 5).

Loads the profile's generator and, when `generate.use_soft` is on and the
scenario has a trained adapter, the soft preference model on its base LLM;
writes the scenario's candidates folder (candidate PNGs,
`candidates.parquet`, `report.json`, built in a staging folder and swapped
in whole) and `metrics/generate/<scenario>.json`.

`generate_into` is the one way a candidates folder is written: the main
stage, every ablation variant (`pmg.stages.ablations`) and `pmg personalize`
call it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from pmg import schemas
from pmg.config import GenerateConfig, Params
from pmg.data.store import read_scenario
from pmg.io import atomic_path, output_folder, read_table, without_timings, write_json_atomic, write_table
from pmg.stages import loaders
from pmg.stages.catalogue import CANDIDATES_TABLE, GENERATE_REPORT, Catalogue


def save_png(image: Image.Image, path: Path) -> None:
    """Write `image` as PNG to a temporary name beside `path`, then rename it."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def generate_into(
    folder: Path,
    cfg: GenerateConfig,
    scenario: str,
    keywords: pd.DataFrame,
    behaviour: Mapping[str, str | None],
    items: pd.DataFrame,
    *,
    generator: Any,
    soft_model: Any | None,
    seed: int,
    finish: Callable[[Path, pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, Any]:
    """Generate the pairs of `keywords` into the candidates folder `folder`; return the table and report.

    The PNGs, then `report.json`, then `candidates.parquet` (last) are
    written into a staging folder that replaces `folder` only when all of it
    is there: a failed run leaves the previous folder as it was.

    Args:
        finish: called as `finish(staging, candidates)` once the candidates
            are written and before the folder is committed, to add files
            that belong with them (the ablation runs' and `pmg personalize`'s
            `scores.parquet`): they are committed in the same swap, under the
            same lock, or not at all when `finish` raises.
    """
    from pmg.method.generate import generate_pairs

    with output_folder(folder) as staging:
        frame, report = generate_pairs(
            cfg,
            scenario,
            keywords,
            behaviour,
            items,
            generator=generator,
            soft_model=soft_model,
            seed=seed,
            save=lambda relative, image: save_png(image, staging / relative),
        )
        # Wall time goes to metrics/ only: a rerun on the same inputs writes the same bytes.
        write_json_atomic(staging / GENERATE_REPORT, without_timings(report.as_dict()))
        frame = write_table(frame, staging / CANDIDATES_TABLE, schemas.Candidates)  # the table last
        if finish is not None:
            finish(staging, frame)
    return frame, report


def generate_for(
    params: Params,
    scenario: str,
    folder: Path,
    *,
    keywords: pd.DataFrame,
    descriptions: pd.DataFrame,
    items: pd.DataFrame,
    generator: Any,
    soft_model: Any | None,
    finish: Callable[[Path, pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, Any]:
    """The main run's generation of `keywords` into `folder` (the stage and `pmg personalize`).

    Behaviour prompts come from `descriptions` (the assembly `train_soft`
    uses); without a soft model the run is keywords only (a scenario with
    no adapter, see `train_soft.scenarios`). `finish` is `generate_into`'s.
    """
    from pmg.method.soft import behaviour_prompts

    cfg = params.generate
    if soft_model is None and cfg.use_soft:
        cfg = cfg.model_copy(update={"use_soft": False})
    return generate_into(
        folder,
        cfg,
        scenario,
        keywords,
        behaviour_prompts(scenario, descriptions),
        items,
        generator=generator,
        soft_model=soft_model,
        seed=params.base.seed,
        finish=finish,
    )


def evaluated_keywords(catalogue: Catalogue, scenario: str, prepared: Any) -> pd.DataFrame:
    """The scenario's `Keywords` rows of its evaluated (test) users: what `generate` and `ablations` run on.

    Args:
        catalogue: where the keywords table is.
        scenario: the scenario.
        prepared: its `PreparedScenario` (the user split).

    Raises:
        DataError: none of its users is a test user (`pmg.data.dataset.evaluated_rows`), naming the table.
    """
    from pmg.data.dataset import evaluated_rows

    where = catalogue.keywords(scenario)
    return evaluated_rows(read_table(where, schemas.Keywords), prepared.splits, scenario, where=where)


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Generate every candidate for one scenario's test users (the evaluated ones); return the metrics."""
    catalogue = catalogue or Catalogue(params)
    prepared = read_scenario(catalogue.prepared(scenario))
    keywords = evaluated_keywords(catalogue, scenario, prepared)
    generator = loaders.generator(params)
    soft_model = (
        loaders.soft_model(params, catalogue.adapter(scenario), generator=generator)
        if params.generate.use_soft
        else None
    )
    _, report = generate_for(
        params,
        scenario,
        catalogue.candidates(scenario),
        keywords=keywords,
        descriptions=read_table(catalogue.descriptions(scenario), schemas.Descriptions),
        items=prepared.items,
        generator=generator,
        soft_model=soft_model,
    )
    metrics = {"soft_embeddings": soft_model is not None, **report.as_dict()}
    write_json_atomic(catalogue.metrics("generate", scenario), metrics)
    log(f"generate {scenario}: {metrics}")
    return metrics
