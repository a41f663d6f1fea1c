"""The `preference_images` / `recommend` stages: off by default, and Table 4 end to end on a tiny world."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pmg.config import load_params
from pmg.data.store import report_frame, write_scenario
from pmg.errors import DataError
from pmg.io import output_folder, read_table, write_features
from pmg.schemas import RecommendUserMetrics
from pmg.stages import loaders, recommend
from pmg.stages.catalogue import GENERATED_USER_FEATURES, RECOMMEND_TABLE, RECOMMEND_USER_METRICS, Catalogue

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "recommend"))
from recommend_helpers import planted_interactions  # noqa: E402

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _params(tmp_path: Path, **recommend_keys):
    overrides = {
        "prepare.out": str(tmp_path / "prepared"),
        "recommend.out": str(tmp_path / "recommend"),
        "recommend.image_cache": str(tmp_path / "cache"),
        **{f"recommend.{k}": v for k, v in recommend_keys.items()},
    }
    return load_params(ROOT / "params.yaml", overrides)


def _catalogue(params, tmp_path: Path) -> Catalogue:
    return Catalogue(params, metrics_root=tmp_path / "metrics", plots_root=tmp_path / "plots")


def _movies_world(folder: Path) -> None:
    """A prepared `movies` scenario: 40 users loyal to one of 4 poster colours, 48 movies."""
    interactions, item_ids, _ = planted_interactions(n_users=40, n_items=48, per_user=10)
    with output_folder(folder) as staging:
        (staging / "images").mkdir()
        items = []
        for n, item in enumerate(item_ids):
            Image.new("RGB", (8, 8), COLOURS[n % 4]).save(staging / "images" / f"{item}.png")
            items.append(
                {
                    "item_id": item, "scenario": "movies", "title": f"Movie {item}", "text": f"Movie {item}.",
                    "attributes": "{}", "image_path": f"images/{item}.png",
                }
            )  # fmt: skip
        splits = []
        for user, rows in interactions.sort_values("timestamp").groupby("user_id", sort=False):
            seq = rows["item_id"].tolist()
            splits.append(
                {
                    "user_id": user, "scenario": "movies", "history_items": json.dumps(seq[-5:-2]),
                    "target_item": seq[-2], "supervision_item": seq[-1], "split": "test",
                }
            )  # fmt: skip
        write_scenario(
            staging,
            items=pd.DataFrame(items),
            interactions=interactions,
            conversations=pd.DataFrame({"user_id": [], "turn": [], "text": []}),
            splits=pd.DataFrame(splits),
            report=report_frame("movies", Counter({"users": 40}), Counter()),
            ground_truth=None,
        )


class MeanColourScorer:
    """A stand-in CLIP: an image's feature is its mean colour."""

    def embed_images(self, images):
        return torch.tensor(np.stack([np.asarray(i, dtype=np.float32).mean(axis=(0, 1)) / 255 for i in images]))


def test_both_stages_are_off_by_default(tmp_path: Path) -> None:
    params = _params(tmp_path)
    assert params.recommend.enabled is False
    catalogue = _catalogue(params, tmp_path)
    assert recommend.run_preference_images(params, catalogue=catalogue, log=lambda _: None)["enabled"] is False
    assert recommend.run(params, catalogue=catalogue, log=lambda _: None)["enabled"] is False
    # every declared output exists (DVC checks them), and nothing was computed
    for stage in ("preference_images", "recommend"):
        for path in catalogue.outputs(stage)[:-1]:  # the timing is written by run_stage
            assert path.exists(), path
    assert json.loads(catalogue.metrics("recommend", "movies").read_text())["enabled"] is False
    assert list(pd.read_csv(catalogue.recommend_curves("movies")).columns)[:3] == ["setting", "seed", "epoch"]
    assert not (catalogue.recommendation("movies") / RECOMMEND_USER_METRICS).exists()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_recommend_stage_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    params = _params(
        tmp_path, enabled=True, seeds=[0, 1, 2], epochs=4, batch_size=128, validate_every=2, dim=8,
        latent_dim=8, bootstrap_resamples=200, validation_fraction=0.2, test_fraction=0.4,
    )  # fmt: skip
    catalogue = _catalogue(params, tmp_path)
    _movies_world(catalogue.prepared("movies"))
    monkeypatch.setattr(loaders, "scorer", lambda _params: MeanColourScorer())

    with pytest.raises(DataError, match=GENERATED_USER_FEATURES):  # no preference_images run yet
        recommend.run(params, catalogue=catalogue, log=lambda _: None)

    # What `preference_images` writes: a feature per user; u0..u29 have one, u30..u39 not.
    users = [f"u{u}" for u in range(30)]
    write_features(
        catalogue.preference_images("movies") / GENERATED_USER_FEATURES,
        users,
        np.array([np.asarray(COLOURS[u % 4], np.float32) / 255 for u in range(30)]),
    )
    marker = catalogue.recommendation("movies") / "disabled.json"
    marker.write_text("{}")  # left by a disabled run outside DVC
    summary = recommend.run(params, catalogue=catalogue, log=lambda _: None)
    assert not marker.exists()

    assert summary["enabled"] is True and list(summary["settings"]) == list(params.recommend.settings)
    counts = summary["counts"]
    assert counts["features"]["generated_user"]["users_with_feature"] == 30  # the others: zero + mask
    assert counts["features"]["mean_user"]["users_with_feature"] == 30  # the same users (common mask)
    rows = read_table(catalogue.recommendation("movies") / RECOMMEND_USER_METRICS, RecommendUserMetrics)
    assert set(rows["setting"]) == set(params.recommend.settings) and set(rows["seed"]) == {0, 1, 2}
    assert rows["value"].notna().all()
    for entry in summary["settings"].values():
        assert entry["recall@20"]["low"] <= entry["recall@20"]["mean"] <= entry["recall@20"]["high"]
    curves = pd.read_csv(catalogue.recommend_curves("movies"))
    assert len(curves) == 4 * 3 * 4 and np.isfinite(curves["loss"]).all()
    assert "item images + generated user" in (catalogue.recommendation("movies") / RECOMMEND_TABLE).read_text()
    assert json.loads(catalogue.metrics("recommend", "movies").read_text()) == json.loads(json.dumps(summary))
