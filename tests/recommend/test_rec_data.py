"""The recommendation data: interaction split, feature alignment, the Table-4 settings' inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pmg.errors import DataError
from pmg.io import read_features, write_features
from pmg.recommend.data import (
    hash_user_split,
    align_features,
    check_no_leak,
    common_user_mask,
    history_items,
    mean_history_features,
    restrict,
    setting_inputs,
    split_interactions,
)

ITEMS = [f"m{i}" for i in range(1, 11)]


def _interactions() -> pd.DataFrame:
    rows = [
        # u1 (validation): positives m1..m5 in time order; m9 rated 2 is not a positive;
        # m1 seen again last -> its latest position counts.
        ("u1", "m2", 1, 5.0), ("u1", "m3", 2, 4.0), ("u1", "m9", 3, 2.0), ("u1", "m4", 4, 4.5),
        ("u1", "m1", 0, 4.0), ("u1", "m5", 5, 5.0), ("u1", "m1", 6, 4.0),
        # u2 (test): only two positives -> cannot both train and be tested
        ("u2", "m6", 1, 5.0), ("u2", "m7", 2, 5.0),
        # u3 (train): all positives train, including an unrated one; one unknown item
        ("u3", "m8", 1, None), ("u3", "m10", 2, 4.0), ("u3", "zz", 3, 5.0),
        # u4 (test)
        ("u4", "m1", 1, 4.0), ("u4", "m2", 2, 4.0), ("u4", "m3", 3, 4.0), ("u4", "m4", 4, 4.0),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def _edges(split) -> set[tuple[str, str]]:
    return {(split.user_ids[u], split.item_ids[i]) for u, i in split.train_edges}


def _held(split, held) -> dict[str, list[str]]:
    return {split.user_ids[u]: [split.item_ids[i] for i in items] for u, items in held.items()}


def test_split_holds_out_the_evaluated_users_last_positives() -> None:
    split = split_interactions(
        _interactions(), ITEMS, validation_users={"u1"}, test_users={"u2", "u4"}, min_rating=4.0, holdout_last=2
    )
    assert split.user_ids == ("u1", "u2", "u3", "u4")
    assert split.item_ids == tuple(ITEMS)
    # u1's positives in time order: m2, m3, m4, m5, m1 (m1's latest position); the last two are held out.
    assert _held(split, split.validation) == {"u1": ["m5", "m1"]}
    assert _held(split, split.test) == {"u4": ["m3", "m4"]}
    assert _edges(split) == {
        ("u1", "m2"), ("u1", "m3"), ("u1", "m4"),
        ("u2", "m6"), ("u2", "m7"),  # too few positives: kept as training edges, not evaluated
        ("u3", "m8"), ("u3", "m10"),
        ("u4", "m1"), ("u4", "m2"),
    }  # fmt: skip
    assert split.counts["test_users_too_few_positives"] == 1
    assert split.counts["interactions_unknown_item"] == 1
    assert split.counts["test_users"] == 1 and split.counts["validation_users"] == 1
    assert split.counts["items_without_training_edge"] == 2  # m5, m9
    assert [list(s) for s in split.seen([0, 3])] == [[1, 2, 3], [0, 1]]


def test_split_refuses_overlapping_user_sets_and_keeps_max_users() -> None:
    with pytest.raises(ValueError, match="both validation and test"):
        split_interactions(_interactions(), ITEMS, validation_users={"u1"}, test_users={"u1"}, min_rating=4.0)
    split = split_interactions(
        _interactions(), ITEMS, validation_users=(), test_users={"u4"}, min_rating=4.0, max_users=2
    )
    assert split.user_ids == ("u1", "u2")
    assert split.counts["users_over_max_users"] == 2
    assert split.counts["test_users_not_in_interactions"] == 1


def test_align_features_masks_absent_and_non_finite_rows() -> None:
    features = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0]], dtype=np.float32)
    table = align_features(["a", "b", "c", "d"], ["c", "b", "a"], features)
    np.testing.assert_array_equal(table.values, [[3, 4], [0, 0], [1, 2], [0, 0]])
    assert table.mask.tolist() == [True, False, True, False]
    assert table.missing == {"absent": ("d",), "nonfinite": ("b",)}
    assert table.counts() == {"with_feature": 2, "absent": 1, "nonfinite": 1}


def test_mean_user_feature_averages_the_history_items_that_have_features() -> None:
    items = align_features(["m1", "m2", "m3"], ["m1", "m2"], np.array([[1.0, 0.0], [0.0, 3.0]]))
    history = {"u1": ["m1", "m2", "m3"], "u2": ["m3"]}  # m3 has no feature
    table = mean_history_features(["u1", "u2", "u3"], history, ["m1", "m2", "m3"], items)
    np.testing.assert_allclose(table.values, [[0.5, 1.5], [0, 0], [0, 0]])
    assert table.mask.tolist() == [True, False, False]
    assert table.missing == {"no_history_feature": ("u2", "u3")}


def test_history_items_reads_the_splits_table() -> None:
    splits = pd.DataFrame({"user_id": ["u1"], "history_items": [json.dumps(["m2", "m3", "m4"])]})
    assert history_items(splits) == {"u1": ["m2", "m3", "m4"]}


def test_user_feature_settings_feature_the_same_users() -> None:
    users = ["u1", "u2", "u3"]
    mean = align_features(users, ["u1", "u2"], np.ones((2, 2)))
    generated = align_features(users, ["u2", "u3"], np.full((2, 2), 2.0))
    common = common_user_mask(mean, generated)
    assert common.tolist() == [False, True, False]
    restricted = restrict(mean, common, users, "no_generated_image")
    assert restricted.mask.tolist() == [False, True, False]
    np.testing.assert_array_equal(restricted.values[0], [0, 0])
    assert restricted.missing["no_generated_image"] == ("u1",)


def test_setting_inputs_carry_exactly_what_each_setting_uses() -> None:
    items = align_features(["m1", "m2"], ["m1"], np.ones((1, 3)))
    users = align_features(["u1"], ["u1"], np.ones((1, 3)))
    assert setting_inputs("no_image", item_features=items).item_features is None
    only_items = setting_inputs("item_image", item_features=items, mean_user=users)
    assert only_items.user_features is None and only_items.item_mask.tolist() == [True, False]
    assert only_items.counts == {"items_with_feature": 1, "items_absent": 1}
    mean = setting_inputs("mean_user", item_features=items, mean_user=users)
    assert mean.user_mask.tolist() == [True] and mean.counts["users_with_feature"] == 1
    with pytest.raises(ValueError, match="needs its user features"):
        setting_inputs("generated_user", item_features=items, mean_user=users)
    with pytest.raises(ValueError, match="unknown setting"):
        setting_inputs("both", item_features=items)


def test_a_user_feature_read_from_held_out_items_is_refused() -> None:
    split = split_interactions(_interactions(), ITEMS, validation_users=(), test_users={"u4"}, min_rating=4.0)
    check_no_leak(split, {"u4": ["m1", "m2"]})  # the history before the held-out m3, m4: fine
    with pytest.raises(ValueError, match="u4.*m3"):
        check_no_leak(split, {"u4": ["m2", "m3"]})


def test_feature_files_round_trip_and_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "posters.npz"
    write_features(path, ["m1", "m2"], np.array([[1, 2], [3, 4]]))
    ids, values = read_features(path)
    assert ids == ["m1", "m2"] and values.dtype == np.float32 and values.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(DataError, match=r"missing\.npz.*does not exist"):
        read_features(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz.*not a feature file"):
        read_features(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", ids=np.array(["a"]), features=np.zeros((2, 3)))
    with pytest.raises(DataError, match="do not match"):
        read_features(tmp_path / "short.npz")


def test_the_settings_are_named_once() -> None:
    from typing import get_args

    from pmg.config import RecommendConfig
    from pmg.recommend.data import SETTING_LABELS, SETTINGS

    allowed = get_args(get_args(RecommendConfig.model_fields["settings"].annotation)[0])
    assert allowed == SETTINGS == tuple(SETTING_LABELS)


def test_hash_user_split_is_stable_disjoint_and_sized() -> None:
    users = [f"u{i}" for i in range(2000)]
    validation, test = hash_user_split(users, validation_fraction=0.1, test_fraction=0.2)
    assert not set(validation) & set(test)
    assert 150 < len(validation) < 250 and 330 < len(test) < 470
    # a user's side depends on its id alone, not on who else is in the list
    sub_validation, sub_test = hash_user_split(users[:500], validation_fraction=0.1, test_fraction=0.2)
    assert set(sub_validation) == set(validation) & set(users[:500])
    assert set(sub_test) == set(test) & set(users[:500])
    with pytest.raises(ValueError, match="fractions"):
        hash_user_split(users, validation_fraction=0.6, test_fraction=0.5)
