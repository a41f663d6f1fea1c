"""Stages `preference_images` and `recommend`: PMG images as user features (PMG §4.6, RQ5, Table 4).

`preference_images` draws one preference-only PMG image per user of the
`recommend.scenario` that has keywords (`w_t = 0`, no target;
`pmg.method.preference_image`), keeps the PNGs by content key under
`recommend.image_cache` (so an unchanged user is never redrawn, across DVC
and Prefect runs), and writes their CLIP image features. It is a stage of
its own so that `dvc repro` does not redraw them when only the recommender
changes.

`recommend` builds the user-item graph of the same scenario (users held out
by hash, `pmg.recommend.data.hash_user_split`; each evaluated user's last
`holdout_last` positives held out), the posters' CLIP features, the
mean-of-history and generated user features, and trains MMGCN in every
Table-4 setting with every seed (`pmg.recommend.experiment`). It writes
the per-user metrics, the runs, Table 4 in Markdown, the training curves
(a DVC plot) and `metrics/recommend/<scenario>.json`.

Both stages are off unless `recommend.enabled` (see `RecommendConfig`):
then they write only their metrics file (`{"enabled": false}`), an empty
output folder marker and an empty curve, in well under a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pmg import schemas
from pmg.config import Params
from pmg.data.store import read_scenario
from pmg.io import (
    atomic_path,
    read_features,
    read_table,
    write_features,
    write_json_atomic,
    write_table,
    write_text_atomic,
)
from pmg.stages import loaders
from pmg.stages.catalogue import (
    GENERATED_USER_FEATURES,
    POSTER_FEATURES,
    RECOMMEND_RUNS,
    RECOMMEND_TABLE,
    RECOMMEND_USER_METRICS,
    Catalogue,
)
from pmg.text import natural_key

DISABLED = {"enabled": False, "how": "dvc exp run -S recommend.enabled=true"}
CURVE_COLUMNS = list(schemas.RecommendCurves.to_schema().columns)


def _disabled(folder_marker, metrics_path, curve_path=None) -> dict:
    write_json_atomic(folder_marker, DISABLED)
    write_json_atomic(metrics_path, DISABLED)
    if curve_path is not None:
        with atomic_path(curve_path) as tmp:
            pd.DataFrame(columns=CURVE_COLUMNS).to_csv(tmp, index=False)
    return dict(DISABLED)


def embed_images(scorer: Any, images: list[Image.Image], batch: int = 256) -> np.ndarray:
    """CLIP image features (N, D) of `images`, in chunks of `batch`."""
    chunks = [scorer.embed_images(images[i : i + batch]).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


# --------------------------------------------------------------- images


def run_preference_images(
    params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Draw (or take from the cache) the preference-only images and write their features; return the metrics."""
    from pmg.method.llm_cache import model_fingerprint, model_id_of
    from pmg.method.preference_image import generate_preference_image, preference_image_key, preference_requests
    from pmg.method.soft import behaviour_prompts

    catalogue = catalogue or Catalogue(params)
    cfg = params.recommend
    scenario = cfg.scenario
    folder = catalogue.preference_images(scenario)
    metrics_path = catalogue.metrics("preference_images", scenario)
    if not cfg.enabled:
        return _disabled(folder / "disabled.json", metrics_path)

    (folder / "disabled.json").unlink(missing_ok=True)  # from a disabled run outside DVC
    generate_cfg = params.generate
    keywords = read_table(catalogue.keywords(scenario), schemas.Keywords)
    descriptions = read_table(catalogue.descriptions(scenario), schemas.Descriptions)
    users = sorted(keywords["user_id"].astype(str), key=natural_key)
    if cfg.max_generated_users is not None:
        users = users[: cfg.max_generated_users]
    generator = loaders.generator(params)
    adapter = catalogue.adapter(scenario)
    soft_model = loaders.soft_model(params, adapter, generator=generator) if generate_cfg.use_soft else None
    if generate_cfg.use_soft and soft_model is None:
        generate_cfg = generate_cfg.model_copy(update={"use_soft": False})  # no adapter: keywords only, as generate
    soft_id = model_fingerprint(adapter) if soft_model is not None else None
    generator_id = model_id_of(params.profile.generator)
    requests, skipped = preference_requests(
        keywords, behaviour_prompts(scenario, descriptions), generate_cfg, users
    )
    cache = catalogue.preference_image_cache()
    started, made, images = time.perf_counter(), 0, []
    for request in requests:
        key = preference_image_key(
            request, generate_cfg, params.base.seed, generator_id=generator_id, soft_model_id=soft_id
        )
        file = cache / key[:2] / f"{key}.png"
        if not file.is_file():
            image = generate_preference_image(
                request, generator=generator, soft_model=soft_model, cfg=generate_cfg, seed=params.base.seed
            )
            with atomic_path(file) as tmp:
                image.save(tmp, format="PNG")
            made += 1
        with Image.open(file) as image:
            images.append(image.convert("RGB"))
    seconds = time.perf_counter() - started
    features = embed_images(loaders.scorer(params), images)
    folder.mkdir(parents=True, exist_ok=True)
    write_features(folder / GENERATED_USER_FEATURES, [r.user_id for r in requests], features)
    metrics = {
        "enabled": True,
        "scenario": scenario,
        "users_requested": len(users),
        "images": len(requests),
        "generated_now": made,
        "from_cache": len(requests) - made,
        "skipped": {reason: len(who) for reason, who in skipped.items()},
        "soft_embeddings": soft_model is not None,
        "seconds": round(seconds, 1),
    }
    write_json_atomic(metrics_path, metrics)
    log(f"preference_images {scenario}: {metrics}")
    return metrics


# ------------------------------------------------------------ recommend


def poster_features(params: Params, prepared: Any) -> tuple[list[str], np.ndarray]:
    """CLIP image features of every item with an image (the profile's scorer)."""
    items = prepared.items[prepared.items["image_path"].notna()]
    images = []
    for relative in items["image_path"]:
        with Image.open(prepared.folder / relative) as image:
            images.append(image.convert("RGB"))
    return items["item_id"].astype(str).tolist(), embed_images(loaders.scorer(params), images)


def run(params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print) -> dict:
    """Train and test MMGCN in every Table-4 setting with every seed; return the metrics document."""
    from pmg.recommend.data import (
        align_features,
        check_no_leak,
        common_user_mask,
        hash_user_split,
        history_items,
        mean_history_features,
        restrict,
        setting_inputs,
        split_interactions,
    )
    from pmg.recommend.experiment import run_experiment, summarise, table_markdown

    catalogue = catalogue or Catalogue(params)
    cfg = params.recommend
    scenario = cfg.scenario
    out = catalogue.recommendation(scenario)
    metrics_path = catalogue.metrics("recommend", scenario)
    curves_path = catalogue.recommend_curves(scenario)
    if not cfg.enabled:
        return _disabled(out / "disabled.json", metrics_path, curves_path)

    (out / "disabled.json").unlink(missing_ok=True)  # from a disabled run outside DVC
    started, cpu_started = time.perf_counter(), time.process_time()
    prepared = read_scenario(catalogue.prepared(scenario))
    users = sorted(prepared.interactions["user_id"].astype(str).unique(), key=natural_key)
    validation, test = hash_user_split(
        users, validation_fraction=cfg.validation_fraction, test_fraction=cfg.test_fraction
    )
    split = split_interactions(
        prepared.interactions,
        prepared.items["item_id"].tolist(),
        validation_users=validation,
        test_users=test,
        min_rating=getattr(params.prepare.section(scenario), "min_rating", None),
        holdout_last=cfg.holdout_last,
        max_users=cfg.max_users,
    )
    history = history_items(prepared.splits)
    check_no_leak(split, history)
    log(f"recommend {scenario}: graph {json.dumps(split.counts)}")

    item_ids, item_values = poster_features(params, prepared)
    out.mkdir(parents=True, exist_ok=True)
    write_features(out / POSTER_FEATURES, item_ids, item_values)
    items = align_features(split.item_ids, item_ids, item_values)
    mean = mean_history_features(split.user_ids, history, split.item_ids, items)
    generated = None
    if "generated_user" in cfg.settings:
        ids, values = read_features(catalogue.preference_images(scenario) / GENERATED_USER_FEATURES)
        generated = align_features(split.user_ids, ids, values)
        common = common_user_mask(mean, generated)  # both user features on the same users
        mean = restrict(mean, common, split.user_ids, "no_generated_image")
        generated = restrict(generated, common, split.user_ids, "no_history_feature")
    inputs = [
        setting_inputs(s, item_features=items, mean_user=mean, generated_user=generated) for s in cfg.settings
    ]
    inputs_seconds = time.perf_counter() - started

    result = run_experiment(split, inputs, cfg)
    test_users = {split.user_ids[u] for u in split.test}
    featured = {
        s.setting: int(sum(bool(s.user_mask[n]) for n, u in enumerate(split.user_ids) if u in test_users))
        for s in inputs
        if s.user_mask is not None
    }
    counts = {
        "graph": split.counts,
        "features": {s.setting: s.counts for s in inputs},
        "test_users_with_user_feature": featured,
        "user_split": "sha256(user id) share < validation_fraction: validation; next test_fraction: test",
        "validation_fraction": cfg.validation_fraction,
        "test_fraction": cfg.test_fraction,
    }
    summary = {"enabled": True, "scenario": scenario, **summarise(result, cfg, counts)}
    summary["seconds"] = {
        "inputs": round(inputs_seconds, 1),
        "total": round(time.perf_counter() - started, 1),
        "cpu_total": round(time.process_time() - cpu_started, 1),  # wall time on a shared machine is load-bound
    }
    write_table(result.user_metrics, out / RECOMMEND_USER_METRICS, schemas.RecommendUserMetrics)
    with atomic_path(out / RECOMMEND_RUNS) as tmp:
        result.runs.to_csv(tmp, index=False)
    with atomic_path(curves_path) as tmp:
        result.curves.to_csv(tmp, index=False)
    table = table_markdown(summary, cfg.top_k)
    write_text_atomic(out / RECOMMEND_TABLE, table + "\n")
    write_json_atomic(metrics_path, summary)
    log(table)
    return summary
