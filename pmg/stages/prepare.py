"""Stage `prepare`: one scenario's sources to validated canonical tables.

`build_scenario` does the work (the scenario's declared loader — real files
or its default world — then the split); `run` builds the scenario folder in a
staging folder swapped in whole (`pmg.io.output_folder`, layout in
`pmg.data.store`) and writes the stage's metrics.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pmg.config import Params, PrepareConfig
from pmg.data.dataset import ScenarioData, make_splits
from pmg.data.store import report_frame, write_scenario
from pmg.errors import ConfigError, DataError
from pmg.io import output_folder, write_json_atomic
from pmg.scenarios import LoadContext
from pmg.scenarios import get as get_scenario
from pmg.stages.catalogue import Catalogue


def build_scenario(
    cfg: PrepareConfig, scenario: str, *, assets: Path, scenario_dir: Path, seed: int
) -> tuple[ScenarioData, pd.DataFrame, pd.DataFrame]:
    """Load or simulate one scenario into `scenario_dir` and split it.

    Args:
        cfg: the `prepare` section (its `<scenario>` section is the loader's).
        scenario: a registered scenario.
        assets: the extracted assets folder.
        scenario_dir: an empty folder; item images go to `scenario_dir/images`.
        seed: the world seed of this scenario (`base.seed * 1000 + seed_index`).

    Returns:
        The scenario data, its `Splits` table and its `PrepareReport` table.
    """
    spec = get_scenario(scenario)
    section = cfg.section(scenario)
    data = spec.load(section, LoadContext(Path(assets), Path(scenario_dir), cfg.image_size, seed))
    options = section.split_options()
    splits, user_skips = make_splits(
        data, options["history_len"], min_rating=options["min_rating"], max_users=options["max_users"]
    )
    if splits.empty:
        raise DataError(
            scenario_dir,
            f"no user of scenario {scenario!r} has the {options['history_len'] + 2} items a split needs",
        )
    skipped = Counter(data.skipped)
    skipped.update({f"users_{reason}": n for reason, n in user_skips.items()})
    kept = Counter(
        {
            "items": len(data.items),
            "items_with_image": int(data.items["image_path"].notna().sum()),
            "interactions": len(data.interactions),
            "conversation_turns": len(data.conversations),
            "users_split": len(splits),
        }
    )
    return data, splits, report_frame(scenario, kept, skipped)


def world_seed(params: Params, scenario: str) -> int:
    """The seed of one scenario's world: each scenario draws from its own stream, so adding one changes no other."""
    return params.base.seed * 1000 + get_scenario(scenario).seed_index


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Prepare one scenario into its folder and write its metrics.

    Returns:
        The metrics written to `metrics/prepare/<scenario>.json`.
    """
    catalogue = catalogue or Catalogue(params)
    if scenario not in params.base.scenarios:
        raise ConfigError(f"scenario {scenario!r} is not in base.scenarios {list(params.base.scenarios)}")
    with output_folder(catalogue.prepared(scenario)) as staging:
        data, splits, report = build_scenario(
            params.prepare, scenario, assets=catalogue.assets(), scenario_dir=staging, seed=world_seed(params, scenario)
        )
        write_scenario(
            staging,
            items=data.items,
            interactions=data.interactions,
            conversations=data.conversations,
            splits=splits,
            report=report,
            ground_truth=data.ground_truth,
        )
    metrics = {
        "kept": {r.reason: int(r.count) for r in report.itertuples() if r.kind == "kept"},
        "skipped": {r.reason: int(r.count) for r in report.itertuples() if r.kind == "skipped"},
    }
    write_json_atomic(catalogue.metrics("prepare", scenario), metrics)
    log(f"prepare {scenario}: {json.dumps(metrics['kept'])}; skipped {json.dumps(metrics['skipped'])}")
    return metrics
