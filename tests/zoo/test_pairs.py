"""The zoo's (image, caption) pairs hold out every test user's target, and their history where affordable."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pmg.data.store import report_frame, write_scenario
from pmg.errors import DataError
from pmg.io import output_folder
from pmg.zoo.pairs import _heldout, heldout_summary, load_pairs

ITEMS = [f"i{n:02d}" for n in range(1, 21)]
# (user, split, history, target, supervision)
USERS = [
    ("t1", "test", ["i01", "i02"], "i03", "i04"),
    ("t2", "test", ["i03", "i05"], "i06", "i07"),  # i03 is t1's target: it stays a "target"
    ("r1", "train", ["i01", "i08"], "i09", "i10"),  # a train user's own items stay in training
    ("v1", "validation", ["i11", "i12"], "i13", "i14"),
]


def _prepared(root: Path) -> dict[str, Path]:
    final = root / "clothing"
    items = pd.DataFrame(
        {
            "item_id": ITEMS,
            "scenario": "clothing",
            "title": [f"Blue Pullover {i}" for i in ITEMS],
            "text": "",
            "attributes": json.dumps({"colour": "blue"}),
            "image_path": [f"images/{i}.png" for i in ITEMS],
        }
    )
    splits = pd.DataFrame(
        [
            {"user_id": u, "scenario": "clothing", "history_items": json.dumps(h), "target_item": t,
             "supervision_item": s, "split": split}
            for u, split, h, t, s in USERS
        ]
    )
    with output_folder(final) as staging:
        (staging / "images").mkdir()
        for item in ITEMS:  # write_scenario checks that every image file exists
            Image.new("RGB", (8, 8), (30, 60, 220)).save(staging / "images" / f"{item}.png")
        write_scenario(
            staging, items=items,
            interactions=pd.DataFrame(columns=["user_id", "item_id", "timestamp", "rating"]),
            conversations=pd.DataFrame(columns=["user_id", "turn", "text"]),
            splits=splits, report=report_frame("clothing", Counter({"users": 4}), Counter()), ground_truth=None,
        )
    return {"clothing": final}


def _heldout_items(pairs: pd.DataFrame) -> set[str]:
    return set(pairs.loc[pairs["split"] == "heldout", "item_id"])


def test_test_users_targets_and_history_are_held_out(tmp_path: Path) -> None:
    pairs = load_pairs(_prepared(tmp_path), heldout_fraction=1e-12, min_train_share=0.5)
    # No item falls in the (tiny) hash share: exactly the test users' items are held out.
    assert not any(_heldout("clothing", i, 1e-12) for i in ITEMS)
    assert _heldout_items(pairs) == {"i01", "i02", "i03", "i05", "i06"}
    roles = dict(zip(pairs["item_id"], pairs["test_role"]))
    assert {i for i, r in roles.items() if r == "target"} == {"i03", "i06"}
    assert {i for i, r in roles.items() if r == "history"} == {"i01", "i02", "i05"}
    # Supervision items of test users and every item of other users are trained on.
    train = set(pairs.loc[pairs["split"] == "train", "item_id"])
    assert {"i04", "i07", "i08", "i09", "i10", "i11", "i13"} <= train
    assert heldout_summary(pairs) == {
        "clothing": {
            "images": 20, "train": 15, "heldout": 5, "test_targets": 2, "test_history": 3,
            "test_history_heldout": 3, "test_history_in_training": 0, "hash_only": 0, "history_heldout": True,
        }
    }
    assert pairs["caption"].iloc[0] == "blue pullover i01"


def test_history_stays_in_training_when_holding_it_out_leaves_too_little(tmp_path: Path) -> None:
    # Holding out history would leave 15 of 20 images (75%) < 90%: targets only.
    pairs = load_pairs(_prepared(tmp_path), heldout_fraction=1e-12, min_train_share=0.9)
    assert _heldout_items(pairs) == {"i03", "i06"}
    summary = heldout_summary(pairs)["clothing"]
    assert summary["history_heldout"] is False and summary["test_history_in_training"] == 3
    # At exactly the threshold (15 / 20 = 0.75) history is still held out.
    pairs = load_pairs({"clothing": tmp_path / "clothing"}, heldout_fraction=1e-12, min_train_share=0.75)
    assert heldout_summary(pairs)["clothing"]["history_heldout"] is True


def test_the_hash_share_is_held_out_on_top(tmp_path: Path) -> None:
    pairs = load_pairs(_prepared(tmp_path), heldout_fraction=0.3, min_train_share=0.1)
    hashed = {i for i in ITEMS if _heldout("clothing", i, 0.3)}
    assert hashed and hashed - {"i01", "i02", "i03", "i05", "i06"}  # the hash adds items of its own
    assert _heldout_items(pairs) == hashed | {"i01", "i02", "i03", "i05", "i06"}
    assert heldout_summary(pairs)["clothing"]["hash_only"] == len(hashed - {"i01", "i02", "i03", "i05", "i06"})


def test_nothing_left_to_train_on_is_an_error_naming_the_scenario(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="scenario 'clothing'.*nothing is left to train on"):
        load_pairs(_prepared(tmp_path), heldout_fraction=0.999999)
