"""Table 4 end to end on tiny data: settings x seeds, the metrics document, ml-latest-small input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pmg.config import ConfigError, RecommendConfig, load_params
from pmg.data.dataset import make_splits
from pmg.data.movielens import load_ml_latest_small
from pmg.recommend.data import (
    align_features,
    check_no_leak,
    history_items,
    mean_history_features,
    setting_inputs,
    split_interactions,
)
from pmg.recommend.experiment import run_experiment, summarise, table_markdown
from pmg.schemas import RecommendCurves, RecommendUserMetrics
from recommend_helpers import planted_interactions  # tests/recommend/ is on sys.path

ROOT = Path(__file__).resolve().parents[2]
TINY = RecommendConfig(
    seeds=(0, 1), epochs=4, batch_size=256, validate_every=2, dim=8, latent_dim=8, bootstrap_resamples=200
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    yield
    torch.set_num_threads(threads)


def test_every_setting_and_seed_is_run_and_summarised() -> None:
    interactions, item_ids, features = planted_interactions(n_users=40, n_items=40, per_user=8)
    users = [f"u{u}" for u in range(40)]
    split = split_interactions(interactions, item_ids, validation_users=users[:8], test_users=users[8:20], min_rating=4.0)
    items = align_features(item_ids, item_ids, features)
    history = {u: [item_ids[i] for i in split.seen([n])[0][:3]] for n, u in enumerate(split.user_ids)}
    mean = mean_history_features(split.user_ids, history, item_ids, items)
    generated = align_features(split.user_ids, users[:30], np.random.default_rng(0).normal(size=(30, features.shape[1])))
    inputs = [
        setting_inputs("no_image"),
        setting_inputs("item_image", item_features=items),
        setting_inputs("mean_user", item_features=items, mean_user=mean),
        setting_inputs("generated_user", item_features=items, generated_user=generated),
    ]
    result = run_experiment(split, inputs, TINY)

    RecommendUserMetrics.validate(result.user_metrics)
    RecommendCurves.validate(result.curves)
    assert len(result.user_metrics) == 4 * 2 * 12 * 4  # settings x seeds x test users x (recall, ndcg @10, @20)
    assert len(result.curves) == 4 * 2 * 4
    assert result.curves["validation_recall"].notna().sum() == 4 * 2 * 2  # epochs 2 and 4
    # The ID branch is shared: parameters grow with the visual branch only.
    params = result.runs.set_index(["setting", "seed"])["parameters"]
    assert params[("no_image", 0)] < params[("item_image", 0)] == params[("mean_user", 0)]

    summary = summarise(result, TINY, counts={"test_users": 12})
    assert list(summary["settings"]) == ["no_image", "item_image", "mean_user", "generated_user"]
    for entry in summary["settings"].values():
        for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
            figure = entry[metric]
            assert figure["low"] <= figure["mean"] <= figure["high"]
            assert figure["mean"] == pytest.approx(np.mean(figure["seed_means"]))
        assert len(entry["best_epochs"]) == 2
    rows = result.user_metrics
    generated_recall = rows[(rows.setting == "generated_user") & (rows.metric == "recall") & (rows.k == 20)]
    assert summary["settings"]["generated_user"]["recall@20"]["mean"] == pytest.approx(generated_recall.value.mean())
    diff = summary["differences"]["generated_user-mean_user"]["recall@20"]["mean"]
    mean_recall = rows[(rows.setting == "mean_user") & (rows.metric == "recall") & (rows.k == 20)].value.mean()
    assert diff == pytest.approx(generated_recall.value.mean() - mean_recall)
    assert set(summary["differences"]) == {
        "item_image-no_image", "mean_user-item_image", "generated_user-item_image", "generated_user-mean_user",
    }  # fmt: skip
    json.dumps(summary)  # a DVC metrics file
    table = table_markdown(summary)
    assert table.count("\n") == 5 and "item images + generated user" in table


def test_no_test_user_is_a_clear_error() -> None:
    interactions, item_ids, _ = planted_interactions(n_users=10, n_items=20, per_user=6)
    split = split_interactions(interactions, item_ids, validation_users=(), test_users=(), min_rating=4.0)
    with pytest.raises(ValueError, match="no test user"):
        run_experiment(split, [setting_inputs("no_image")], TINY)


# ----------------------------------------------------------- ml-latest-small

MOVIES = ["movieId,title,genres"] + [
    f"{m},Movie {m} ({1990 + m % 10}),{['Action', 'Comedy', 'Drama', 'Horror'][m % 4]}" for m in range(1, 25)
]


def _ml_latest_small(folder: Path) -> Path:
    """A tiny ml-latest-small folder: 16 users, 24 movies, genre-loyal users, half-star ratings."""
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text("\n".join(MOVIES) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, 17):
        liked = [m for m in range(1, 25) if m % 4 == user % 4]
        others = [m for m in range(1, 25) if m % 4 != user % 4]
        for t, movie in enumerate(rng.permutation(liked)):
            lines.append(f"{user},{movie},{rng.choice([4.0, 4.5, 5.0])},{964980000 + 100 * t}")
        for t, movie in enumerate(rng.choice(others, 3, replace=False)):
            lines.append(f"{user},{movie},{rng.choice([1.5, 2.0, 3.5])},{964990000 + 100 * t}")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_runs_on_ml_latest_small_files(tmp_path: Path) -> None:
    data = load_ml_latest_small(_ml_latest_small(tmp_path / "ml-latest-small"))
    data.items["image_path"] = "poster.png"  # prepare renders posters; make_splits only asks for one
    splits, _ = make_splits(data, history_len=3, min_rating=4.0)
    users = sorted(splits["user_id"], key=int)
    split = split_interactions(
        data.interactions, data.items["item_id"].tolist(),
        validation_users=users[:4], test_users=users[4:10], min_rating=4.0, holdout_last=2,
    )  # fmt: skip
    assert split.counts["test_users"] == 6 and split.n_items == 24
    # Held out = exactly the split's target and supervision items (after the history window).
    for u, held in split.test.items():
        row = splits.set_index("user_id").loc[split.user_ids[u]]
        assert [split.item_ids[i] for i in held] == [row["target_item"], row["supervision_item"]]
    history = history_items(splits)
    check_no_leak(split, history)
    genres = [json.loads(a)["genres"][0] for a in data.items["attributes"]]
    one_hot = np.array([[g == name for name in ("Action", "Comedy", "Drama", "Horror")] for g in genres], float)
    items = align_features(data.items["item_id"].tolist(), data.items["item_id"].tolist(), one_hot)
    mean = mean_history_features(split.user_ids, history, split.item_ids, items)
    assert mean.mask.all()
    result = run_experiment(
        split,
        [setting_inputs("no_image"), setting_inputs("mean_user", item_features=items, mean_user=mean)],
        TINY.model_copy(update={"seeds": (0,)}),
    )
    assert set(result.user_metrics["setting"]) == {"no_image", "mean_user"}
    assert result.user_metrics["value"].between(0, 1).all()


def test_params_yaml_recommend_section_and_bad_keys() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.recommend.settings == ("no_image", "item_image", "mean_user", "generated_user")
    assert len(params.recommend.seeds) >= 3
    with pytest.raises(ConfigError, match="select_metric"):
        load_params(ROOT / "params.yaml", {"recommend.select_metric": "recall@50"})
    with pytest.raises(ConfigError, match="recommend.epoch"):
        load_params(ROOT / "params.yaml", {"recommend.epoch": 3})
