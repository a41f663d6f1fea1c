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
