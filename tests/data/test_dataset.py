"""The per-user split follows the paper's rule and reports the users it skips."""

from __future__ import annotations

import json

import pandas as pd

from pmg import schemas
from pmg.data.dataset import ScenarioData, make_splits


def _data(rows: list[tuple[str, str, int, float | None]], no_image: tuple[str, ...] = ()) -> ScenarioData:
    item_ids = sorted({r[1] for r in rows})
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "scenario": "movies",
            "title": item_ids,
            "text": "",
            "attributes": "{}",
            "image_path": [None if i in no_image else f"images/{i}.png" for i in item_ids],
        }
    )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return ScenarioData("movies", schemas.Items.validate(items), schemas.Interactions.validate(inter))


def test_window_is_history_then_target_then_supervision() -> None:
    # Given out of time order on purpose: the split sorts by timestamp.
    rows = [("u1", f"m{t}", t, 5.0) for t in (6, 1, 2, 3, 4, 5)]
    splits, skipped = make_splits(_data(rows), 3)
    row = splits.iloc[0]
    assert json.loads(row["history_items"]) == ["m2", "m3", "m4"]
    assert row["target_item"] == "m5"
    assert row["supervision_item"] == "m6"
    assert not skipped


def test_low_ratings_and_imageless_items_leave_the_sequence() -> None:
    rows = [("u1", "a", 1, 5.0), ("u1", "b", 2, 3.0), ("u1", "c", 3, 4.0), ("u1", "d", 4, 5.0),
            ("u1", "e", 5, 4.5), ("u1", "f", 6, 5.0), ("u1", "g", 7, 5.0)]
    splits, _ = make_splits(_data(rows, no_image=("f",)), 3, min_rating=4.0)
    row = splits.iloc[0]
    # b (rated 3) and f (no image) are gone.
    assert json.loads(row["history_items"]) == ["a", "c", "d"]
    assert (row["target_item"], row["supervision_item"]) == ("e", "g")


def test_repeated_item_keeps_latest_position() -> None:
    rows = [("u1", "a", 1, None), ("u1", "b", 2, None), ("u1", "c", 3, None), ("u1", "a", 4, None),
            ("u1", "d", 5, None), ("u1", "e", 6, None)]
    splits, _ = make_splits(_data(rows), 2)
    row = splits.iloc[0]
    assert json.loads(row["history_items"]) == ["c", "a"]
    assert (row["target_item"], row["supervision_item"]) == ("d", "e")


def test_short_users_are_skipped_and_counted() -> None:
    rows = [("u1", f"m{t}", t, 5.0) for t in range(5)] + [("u2", "m1", 1, 5.0), ("u2", "m2", 2, 5.0),
            ("u3", "m1", 1, 1.0)]
    splits, skipped = make_splits(_data(rows), 3, min_rating=4.0)
    assert splits["user_id"].tolist() == ["u1"]
    assert skipped == {"too_few_interactions": 2}


def test_max_users_keeps_first_by_id() -> None:
    rows = [(u, f"m{t}", t, None) for u in ("u2", "u1", "u3") for t in range(4)]
    splits, skipped = make_splits(_data(rows), 2, max_users=2)
    assert splits["user_id"].tolist() == ["u1", "u2"]
    assert skipped == {"over_max_users": 1}


# ------------------------------------------------------------ user splits


def test_every_user_gets_a_stable_hash_split() -> None:
    from collections import Counter

    from pmg.config import UserSplitConfig
    from pmg.data.dataset import user_split_of

    cfg = UserSplitConfig(validation=0.15, test=0.25)
    users = [f"c{i:04d}" for i in range(4000)]
    splits = {u: user_split_of("clothing", u, cfg) for u in users}
    counts = Counter(splits.values())
    # Shares close to the configured ones (4000 users: sd of the test share ~0.007).
    assert abs(counts["test"] / 4000 - 0.25) < 0.03 and abs(counts["validation"] / 4000 - 0.15) < 0.03
    # A user's split depends only on (scenario, user id): the same alone as among many ...
    assert all(user_split_of("clothing", u, cfg) == splits[u] for u in users[::97])
    # ... and differs between scenarios for some users (the scenario is hashed too).
    assert any(user_split_of("movies", u, cfg) != splits[u] for u in users[:200])
    # A larger test share only moves users into test (nested thresholds).
    wider = UserSplitConfig(validation=0.15, test=0.35)
    assert all(user_split_of("clothing", u, wider) == "test" for u in users if splits[u] == "test")


def test_make_splits_writes_the_split_column_and_the_counts() -> None:
    from pmg.config import UserSplitConfig
    from pmg.data.dataset import split_counts, user_split_of

    rows = [(f"u{u}", f"m{t}", t, None) for u in range(40) for t in range(5)]
    cfg = UserSplitConfig(validation=0.2, test=0.3)
    splits, _ = make_splits(_data(rows), 2, user_split=cfg)
    assert splits["split"].tolist() == [user_split_of("movies", u, cfg) for u in splits["user_id"]]
    counts = split_counts(splits)
    assert sum(counts.values()) == 40 and set(counts) == {"users_train", "users_validation", "users_test"}
    assert counts["users_test"] == (splits["split"] == "test").sum() > 0


def test_a_split_without_test_or_train_users_names_the_scenario_and_split() -> None:
    import pytest

    from pmg.config import UserSplitConfig
    from pmg.data.dataset import check_user_splits
    from pmg.errors import DataError

    rows = [(f"u{u}", f"m{t}", t, None) for u in range(40) for t in range(5)]
    cfg = UserSplitConfig(validation=0.2, test=0.3, min_users=2)
    splits, _ = make_splits(_data(rows), 2, user_split=cfg)
    check_user_splits(splits, "movies", cfg)  # every split is populated
    with pytest.raises(DataError, match="scenario 'movies': split 'test' has 0 user"):
        check_user_splits(splits[splits["split"] != "test"], "movies", cfg)
    with pytest.raises(DataError, match="scenario 'movies': split 'train' has 0 user"):
        check_user_splits(splits[splits["split"] != "train"], "movies", cfg)
    one_test = pd.concat([splits[splits["split"] != "test"], splits[splits["split"] == "test"].head(1)])
    with pytest.raises(DataError, match="split 'test' has 1 user.*min_users = 2"):
        check_user_splits(one_test, "movies", cfg)
    # Validation may be empty only when its share is 0.
    no_validation = splits[splits["split"] != "validation"]
    with pytest.raises(DataError, match="split 'validation' has 0"):
        check_user_splits(no_validation, "movies", cfg)
    check_user_splits(no_validation, "movies", UserSplitConfig(validation=0.0, test=0.3, min_users=2))


def test_user_split_config_leaves_room_for_train() -> None:
    import pytest

    from pmg.config import UserSplitConfig

    with pytest.raises(ValueError, match="leave a share for train"):
        UserSplitConfig(validation=0.5, test=0.5)
    with pytest.raises(ValueError):
        UserSplitConfig(test=0.0)
