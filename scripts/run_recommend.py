"""Stand-in driver of the future `recommend` stage (PMG §4.6, Table 4), until the stage is wired.

Everything it computes is done by library functions (`pmg.recommend.*`,
`pmg.method.preference_image`); this script only loads, reads and writes, as
the stage's thin `main` will:

1. the prepared scenario (`<prepare.out>/<recommend.scenario>`), and a user
   split by hash (a stand-in for the project's train / validation / test
   split of users, which another change introduces: `--test-fraction`,
   `--validation-fraction`);
2. the posters' CLIP image features from the profile's scorer
   (`<out>/poster_features.npz`);
3. with `--generated`: one preference-only PMG image per user with keywords
   (`w_t = 0`, no target), kept by content key under
   `<cache>/<key[:2]>/<key>.png` so an unchanged user is never regenerated,
   and their CLIP features (`<out>/generated_user_features.npz`);
4. every setting × seed (`run_experiment`), then `user_metrics.parquet`,
   `curves.csv` (a DVC plot's rows), `runs.csv`, the metrics document
   `metrics/recommend/<scenario>.json`, and Table 4 in Markdown on stdout.

    python scripts/run_recommend.py                    # the first three settings
    python scripts/run_recommend.py --generated        # all four (needs keywords, zoo, adapter)
    python scripts/run_recommend.py --set recommend.epochs=5 --set recommend.seeds=[0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from pmg import schemas
from pmg.config import load_params
from pmg.data.store import read_scenario
from pmg.errors import PMGError
from pmg.method.describe import natural_key
from pmg.io import atomic_path, read_table, write_json_atomic, write_table, write_text_atomic
from pmg.recommend.data import (
    align_features,
    check_no_leak,
    common_user_mask,
    history_items,
    mean_history_features,
    read_features,
    restrict,
    setting_inputs,
    split_interactions,
    write_features,
)
from pmg.recommend.experiment import run_experiment, summarise, table_markdown


def hash_share(user: str) -> float:
    """A user's position in [0, 1) by sha256 of the id (stable across runs and user sets)."""
    return int.from_bytes(hashlib.sha256(str(user).encode()).digest()[:8], "big") / 2**64


def poster_features(params, prepared, path: Path, log) -> tuple[list[str], np.ndarray]:
    """CLIP image features of every item with an image (computed once, then read)."""
    if path.is_file():
        return read_features(path)
    from PIL import Image

    from pmg.stages import models

    scorer = models.scorer(params)
    items = prepared.items[prepared.items["image_path"].notna()]
    started = time.perf_counter()
    ids, chunks = [], []
    for start in range(0, len(items), 256):
        chunk = items.iloc[start : start + 256]
        images = []
        for relative in chunk["image_path"]:
            with Image.open(prepared.folder / relative) as image:
                images.append(image.convert("RGB"))
        chunks.append(scorer.embed_images(images).numpy())
        ids += chunk["item_id"].astype(str).tolist()
    write_features(path, ids, np.concatenate(chunks))
    log(f"poster features: {len(ids)} items in {time.perf_counter() - started:.1f} s -> {path}")
    return read_features(path)


def generated_features(params, scenario: str, path: Path, cache: Path, log) -> tuple[list[str], np.ndarray, dict]:
    """Preference-only PMG images of the users with keywords, cached by content key, and their CLIP features."""
    from PIL import Image

    from pmg.method.generate import behaviour_prompts
    from pmg.method.llm_cache import model_fingerprint, model_id_of
    from pmg.method.preference_image import generate_preference_image, preference_image_key, preference_requests
    from pmg.stages import models
    from pmg.stages.generate import soft_model_for

    cfg = params.generate
    keywords = read_table(Path(params.keywords.out) / f"{scenario}.parquet", schemas.Keywords)
    descriptions = read_table(Path(params.describe.out) / f"{scenario}.parquet", schemas.Descriptions)
    users = sorted(keywords["user_id"].astype(str), key=natural_key)
    if params.recommend.max_generated_users is not None:
        users = users[: params.recommend.max_generated_users]
    generator = models.generator(params)
    soft_model = soft_model_for(params, scenario, generator) if cfg.use_soft else None
    if cfg.use_soft and soft_model is None:
        cfg = cfg.model_copy(update={"use_soft": False})  # no adapter: keywords only, as the generate stage does
    adapter = Path(params.train_soft.out) / scenario
    soft_id = model_fingerprint(adapter) if soft_model is not None else None
    generator_id = model_id_of(params.profile.generator)
    requests, skipped = preference_requests(keywords, behaviour_prompts(descriptions, scenario), cfg, users)
    started, made = time.perf_counter(), 0
    images = []
    for request in requests:
        key = preference_image_key(request, cfg, params.base.seed, generator_id=generator_id, soft_model_id=soft_id)
        file = cache / key[:2] / f"{key}.png"
        if not file.is_file():
            image = generate_preference_image(
                request, generator=generator, soft_model=soft_model, cfg=cfg, seed=params.base.seed
            )
            with atomic_path(file) as tmp:
                image.save(tmp, format="PNG")
            made += 1
        with Image.open(file) as image:
            images.append(image.convert("RGB"))
    seconds = time.perf_counter() - started
    scorer = models.scorer(params)
    features = scorer.embed_images(images).numpy()
    ids = [r.user_id for r in requests]
    write_features(path, ids, features)
    report = {
        "users_requested": len(users), "images": len(ids), "generated_now": made, "from_cache": len(ids) - made,
        "skipped": {k: len(v) for k, v in skipped.items()}, "seconds": round(seconds, 1),
        "soft_embeddings": soft_model is not None,
    }  # fmt: skip
    log(f"preference-only images: {report}")
    return ids, features, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", action="append", default=[], help="dotted override, e.g. recommend.epochs=5")
    parser.add_argument("--generated", action="store_true", help="also the generated-user setting")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--cache", default="data/cache/preference_images")
    parser.add_argument("--metrics", default="metrics/recommend")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    log = lambda message: print(message, flush=True)  # noqa: E731
    try:
        params = load_params(args.params, overrides)
        cfg = params.recommend
        scenario = cfg.scenario
        out = Path(cfg.out) / scenario
        started, cpu_started = time.perf_counter(), time.process_time()
        prepared = read_scenario(Path(params.prepare.out) / scenario)
        users = sorted(prepared.interactions["user_id"].astype(str).unique())
        validation = [u for u in users if hash_share(u) < args.validation_fraction]
        test = [u for u in users if args.validation_fraction <= hash_share(u) < args.validation_fraction + args.test_fraction]
        split = split_interactions(
            prepared.interactions, prepared.items["item_id"].tolist(), validation_users=validation, test_users=test,
            min_rating=params.prepare.movies.min_rating, holdout_last=cfg.holdout_last, max_users=cfg.max_users,
        )  # fmt: skip
        history = history_items(prepared.splits)
        check_no_leak(split, history)
        log(f"graph: {json.dumps(split.counts)}")

        item_ids, item_values = poster_features(params, prepared, out / "poster_features.npz", log)
        items = align_features(split.item_ids, item_ids, item_values)
        mean = mean_history_features(split.user_ids, history, split.item_ids, items)
        settings = [s for s in cfg.settings if s != "generated_user" or args.generated]
        generated, generation = None, None
        if "generated_user" in settings:
            ids, values, generation = generated_features(
                params, scenario, out / "generated_user_features.npz", Path(args.cache), log
            )
            generated = align_features(split.user_ids, ids, values)
            common = common_user_mask(mean, generated)
            mean = restrict(mean, common, split.user_ids, "no_generated_image")
            generated = restrict(generated, common, split.user_ids, "no_history_feature")
        inputs = [setting_inputs(s, item_features=items, mean_user=mean, generated_user=generated) for s in settings]
        prepared_seconds = time.perf_counter() - started

        result = run_experiment(split, inputs, cfg)
        test_users = {split.user_ids[u] for u in split.test}
        featured = {
            s.setting: int(sum(bool(s.user_mask[n]) for n, u in enumerate(split.user_ids) if u in test_users))
            for s in inputs if s.user_mask is not None
        }  # fmt: skip
        counts = {
            "graph": split.counts,
            "features": {s.setting: s.counts for s in inputs},
            "test_users_with_user_feature": featured,
            "user_split": "stand-in: sha256(user id) share < validation_fraction = validation, next test_fraction = test",
            "validation_fraction": args.validation_fraction,
            "test_fraction": args.test_fraction,
        }
        summary = summarise(result, cfg, counts)
        summary["seconds"] = {
            "inputs": round(prepared_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
            "cpu_total": round(time.process_time() - cpu_started, 1),  # wall time on a shared machine is load-bound
        }
        if generation is not None:
            summary["generation"] = generation
        write_table(result.user_metrics, out / "user_metrics.parquet", schemas.RecommendUserMetrics)
        with atomic_path(out / "curves.csv") as tmp:
            result.curves.to_csv(tmp, index=False)
        with atomic_path(out / "runs.csv") as tmp:
            result.runs.to_csv(tmp, index=False)
        write_json_atomic(Path(args.metrics) / f"{scenario}.json", summary)
        table = table_markdown(summary, cfg.top_k)
        write_text_atomic(out / "table4.md", table + "\n")
        log(table)
        for name, entry in summary["settings"].items():
            log(f"{name}: {entry['seconds']:.1f} s for {len(cfg.seeds)} seeds, best epochs {entry['best_epochs']}")
        log(json.dumps(summary["differences"], indent=1))
    except (PMGError, ValueError) as err:
        print(f"pmg: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
