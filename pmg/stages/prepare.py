"""DVC stage `prepare`: one scenario's sources to validated canonical tables.

`build_scenario` does the work (pick the source, load or simulate, normalise
images, split); `run` resolves the folders, writes the scenario folder
atomically (see `pmg.data.store`) and the stage's metrics file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from pmg.config import Params, PrepareConfig
from pmg.data.dataset import ScenarioData, check_user_splits, make_splits, split_counts
from pmg.data.store import report_frame, staging_folder, write_scenario
from pmg.errors import ConfigError, DataError
from pmg.io import write_json_atomic


def _load_movies(cfg: PrepareConfig, assets: Path, scenario_dir: Path) -> ScenarioData:
    from pmg.data import movielens
    from pmg.data.images import materialise_images
    from pmg.data.world.posters import render_posters

    source = cfg.movies
    posters = Path(source.posters) if source.posters else None
    if source.source == "default":
        data = movielens.load_recbole_atomic(assets / "ml-100k", dataset="ml-100k")
    elif source.source == "ml-latest-small":
        data = movielens.load_ml_latest_small(Path(source.path), posters=posters)
    elif source.source == "ml-100k":
        data = movielens.load_ml_100k(Path(source.path), posters=posters)
    else:
        data = movielens.load_recbole_atomic(Path(source.path), posters=posters)
    data.items, image_skips = materialise_images(data.items, scenario_dir, cfg.image_size)
    data.skipped.update(image_skips)
    # Movies without a usable real poster get a rendered one (labelled
    # synthetic in the image and in attributes["poster"]).
    data.items = render_posters(
        data.items, scenario_dir / "images", cfg.image_size, emoji_font=assets / "noto-emoji" / "NotoColorEmoji.ttf"
    )
    return data


def _load_clothing(cfg: PrepareConfig, assets: Path, scenario_dir: Path, seed: int) -> ScenarioData:
    source = cfg.clothing
    if source.source == "default":
        from pmg.data.world.clothing import build_clothing_world

        return build_clothing_world(
            source, assets=assets, images_dir=scenario_dir / "images", size=cfg.image_size, seed=seed
        )
    from pmg.data.images import materialise_images
    from pmg.data.pog import load_pog

    data = load_pog(Path(source.path), Path(source.images))
    data.items, image_skips = materialise_images(data.items, scenario_dir, cfg.image_size)
    data.skipped.update(image_skips)
    return data


def _load_emoji(cfg: PrepareConfig, assets: Path, scenario_dir: Path, seed: int) -> ScenarioData:
    from pmg.data.world.emoji import build_emoji_world

    return build_emoji_world(cfg.emoji, assets=assets, images_dir=scenario_dir / "images", size=cfg.image_size, seed=seed)


def build_scenario(
    cfg: PrepareConfig, scenario: str, *, assets: Path, scenario_dir: Path, seed: int
) -> tuple[ScenarioData, pd.DataFrame, pd.DataFrame]:
    """Load or simulate one scenario into `scenario_dir` and split it.

    Args:
        cfg: the `prepare` section.
        scenario: `clothing`, `movies` or `emoji`.
        assets: the extracted assets folder.
        scenario_dir: an empty folder; item images go to `scenario_dir/images`.
        seed: seed of the simulated worlds (derived per scenario).

    Returns:
        The scenario data, its `Splits` table and its `PrepareReport` table.
    """
    if scenario == "movies":
        data = _load_movies(cfg, assets, scenario_dir)
        history_len, min_rating, max_users = cfg.movies.history_len, cfg.movies.min_rating, cfg.movies.max_users
    elif scenario == "clothing":
        data = _load_clothing(cfg, assets, scenario_dir, seed)
        history_len, min_rating, max_users = cfg.clothing.history_len, None, cfg.clothing.max_users
    elif scenario == "emoji":
        data = _load_emoji(cfg, assets, scenario_dir, seed)
        history_len, min_rating, max_users = cfg.emoji.history_len, None, cfg.emoji.max_users
    else:
        raise ConfigError(f"unknown scenario {scenario!r}")
    splits, user_skips = make_splits(
        data, history_len, min_rating=min_rating, max_users=max_users, user_split=cfg.user_split
    )
    if splits.empty:
        raise DataError(scenario_dir, f"no user of scenario {scenario!r} has the {history_len + 2} items a split needs")
    check_user_splits(splits, scenario, cfg.user_split, where=Path(cfg.out) / scenario / "splits.parquet")
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
    kept.update(split_counts(splits))
    return data, splits, report_frame(scenario, kept, skipped)


def run(params: Params, scenario: str, *, metrics_dir: Path = Path("metrics/prepare"), log=print) -> dict:
    """Prepare one scenario into `<prepare.out>/<scenario>` and write its metrics.

    Returns:
        The metrics written to `<metrics_dir>/<scenario>.json`.
    """
    if scenario not in params.base.scenarios:
        raise ConfigError(f"scenario {scenario!r} is not in base.scenarios {list(params.base.scenarios)}")
    final = Path(params.prepare.out) / scenario
    staging = staging_folder(final)
    # Each scenario draws from its own stream, so adding one does not change another.
    seed = params.base.seed * 1000 + ("clothing", "movies", "emoji").index(scenario)
    try:
        data, splits, report = build_scenario(
            params.prepare, scenario, assets=Path(params.assets.folder), scenario_dir=staging, seed=seed
        )
        write_scenario(
            staging,
            final,
            items=data.items,
            interactions=data.interactions,
            conversations=data.conversations,
            splits=splits,
            report=report,
            ground_truth=data.ground_truth,
        )
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    metrics = {
        "kept": {r.reason: int(r.count) for r in report.itertuples() if r.kind == "kept"},
        "skipped": {r.reason: int(r.count) for r in report.itertuples() if r.kind == "skipped"},
    }
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    log(f"prepare {scenario}: {json.dumps(metrics['kept'])}; skipped {json.dumps(metrics['skipped'])}")
    return metrics
