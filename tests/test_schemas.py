"""Each schema accepts a good frame and rejects the bad ones it exists to catch."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pmg import schemas
from pmg.errors import DataError
from pmg.io import validate


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["1", "2"],
            "scenario": ["movies", "movies"],
            "title": ["Toy Story", "Heat"],
            "text": ["", "x"],
            "attributes": [json.dumps({"genres": ["Animation"]}), "{}"],
            "image_path": ["images/1.png", None],
        }
    )


def _splits() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1"],
            "scenario": ["movies"],
            "history_items": [json.dumps(["1", "2", "3"])],
            "target_item": ["4"],
            "supervision_item": ["5"],
        }
    )


def test_good_frames_pass() -> None:
    validate(_items(), schemas.Items, "items")
    validate(_splits(), schemas.Splits, "splits")
    validate(
        pd.DataFrame({"user_id": ["e1", "e1"], "turn": [0, 1], "text": ["hi", "sad today"]}),
        schemas.Conversations,
        "c",
    )
    validate(
        pd.DataFrame({"user_id": ["c1"], "scenario": ["clothing"], "preferences": ['{"colour": "red"}']}),
        schemas.GroundTruth,
        "gt",
    )


@pytest.mark.parametrize(
    ("mutate", "column"),
    [
        (lambda f: f.assign(item_id=["1", "1"]), "item_id"),
        # A scenario name's shape is checked here; which names exist is the registry's (config) check.
        (lambda f: f.assign(scenario=["movies", "Movies!"]), "scenario"),
        (lambda f: f.assign(scenario=["movies", ""]), "scenario"),
        (lambda f: f.assign(attributes=["{}", "[1, 2]"]), "attributes"),
        (lambda f: f.assign(attributes=["{}", "not json"]), "attributes"),
        (lambda f: f.assign(title=["", "Heat"]), "title"),
        (lambda f: f.assign(extra=[1, 2]), None),
    ],
)
def test_bad_items_are_rejected(mutate, column) -> None:
    with pytest.raises(DataError) as err:
        validate(mutate(_items()), schemas.Items, "items.parquet")
    assert "items.parquet" in str(err.value)
    if column:
        assert repr(column) in str(err.value)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.assign(history_items=["[]"]),
        lambda f: f.assign(history_items=['["1", 2]']),
        lambda f: f.assign(target_item=["5"]),  # target == supervision
        lambda f: f.assign(target_item=["2"]),  # target in history
        lambda f: f.assign(supervision_item=["1"]),  # supervision in history
    ],
)
def test_bad_splits_are_rejected(mutate) -> None:
    with pytest.raises(DataError):
        validate(mutate(_splits()), schemas.Splits, "splits.parquet")


def test_interactions_duplicates_and_types() -> None:
    good = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [3], "rating": [None]})
    validate(good, schemas.Interactions, "i")
    with pytest.raises(DataError):
        validate(pd.concat([good, good]), schemas.Interactions, "i")
    with pytest.raises(DataError, match="'rating'"):
        validate(good.assign(rating=["five"]), schemas.Interactions, "i")
