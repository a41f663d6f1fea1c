"""(image, caption) pairs of the prepared scenarios, for training the mini zoo.

The mini profile has no pretrained CLIP or text-to-image model, so it trains
small ones on the default world's item images and captions. A caption is
what the image shows, in the words the method later uses for keywords; each
scenario declares its own (`pmg.scenarios.<name>`: the garment's title "blue
dotted pullover", the poster's genres "comedy romance movie poster", the
glyph's name "crying cat face emoji").

What the zoo never trains on (evaluation protocol)
-------------------------------------------------
Every reported figure comes from the test users of `prepare`'s user split
(`schemas.Splits.split`), so the zoo must not have learnt their images. An
item with an image is `heldout` (never trained on; the quality gates are
measured on these) when it is

1. a **test user's target item** — always;
2. a **test user's history item** — when the catalogue allows: if holding
   out targets, history and the hash share below together would leave less
   than `min_train_share` of the scenario's images to train on, the
   scenario holds out targets only, and the test users' history items
   stay in training (the zoo then has seen the images the history-side
   metrics compare against, but never the target an output is generated
   for);
3. in the **hash share**: a hash of (scenario, item id) below
   `heldout_fraction`, as before, so the gate set also holds items no
   test user touches and stays stable when items are added or removed.

Train users' items that are no test user's target or history stay in
training (the adapters' supervision items included). `test_role` records
why an item is what it is, and :func:`heldout_summary` counts it per
scenario (the counts of the default world are in the README). The rule
reads the whole test split, not only the users a capped run describes, so
it does not depend on `describe` settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pmg.data.store import read_scenario
from pmg.errors import ConfigError, DataError
from pmg.scenarios import get as get_scenario


def caption_for_item(scenario: str, title: str, attributes: dict) -> str:
    """The caption of one item image: the scenario's declared `caption`.

    Raises:
        DataError: `scenario` is not registered.
    """
    try:
        caption = get_scenario(scenario).caption
    except ConfigError as err:
        raise DataError("<items>", str(err), column="scenario") from None
    return caption(title, attributes)


def _heldout(scenario: str, item_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"{scenario}\0{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


MIN_TRAIN_SHARE = 0.5
"""Default floor of the share of a scenario's images the zoo still trains on
when the test users' history items are held out too (see the module docstring)."""

TEST_ROLES = ("target", "history", "")
"""`test_role` values: a test user's target item, a (non-target) test user's history item, neither."""


def test_items(splits: pd.DataFrame) -> tuple[set[str], set[str]]:
    """The test users' target items, and their history items that are no test user's target.

    Args:
        splits: a `schemas.Splits` table (with the `split` column).
    """
    test = splits[splits["split"] == "test"]
    targets = set(test["target_item"].astype(str))
    history = {str(i) for items in test["history_items"] for i in json.loads(items)} - targets
    return targets, history


def load_pairs(
    prepared: Mapping[str, str | Path],
    *,
    heldout_fraction: float = 0.15,
    min_train_share: float = MIN_TRAIN_SHARE,
) -> pd.DataFrame:
    """All items with an image of the given scenarios, captioned, with the test users' items held out.

    Args:
        prepared: scenario -> its prepared folder (`<prepare.out>/<scenario>`), in order.
        heldout_fraction: share of items (by hash) kept out of training for
            the gates, besides the test users' items.
        min_train_share: hold the test users' history items out only when
            at least this share of the scenario's images is left to train
            on (their targets are held out regardless).

    Returns:
        Columns `scenario`, `item_id`, `image_file` (absolute path),
        `caption`, `split` (`train` or `heldout`), `attributes` (dict),
        `test_role` (`target`, `history` or "": see :data:`TEST_ROLES`) and
        `history_heldout` (bool, per scenario: whether the test users'
        history items were held out).

    Raises:
        DataError: no item has an image, or the test targets and the hash
            share leave a scenario nothing to train on.
    """
    frames = []
    for scenario, folder in prepared.items():
        scenario_data = read_scenario(folder)
        targets, history = test_items(scenario_data.splits)
        rows = []
        for item in scenario_data.items.itertuples(index=False):
            if pd.isna(item.image_path):
                continue
            attributes = json.loads(item.attributes)
            item_id = str(item.item_id)
            rows.append(
                {
                    "scenario": scenario,
                    "item_id": item_id,
                    "image_file": str((scenario_data.folder / item.image_path).resolve()),
                    "caption": caption_for_item(scenario, item.title, attributes),
                    "split": "heldout" if _heldout(scenario, item_id, heldout_fraction) else "train",
                    "attributes": attributes,
                    "test_role": "target" if item_id in targets else "history" if item_id in history else "",
                }
            )
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        frame.loc[frame["test_role"] == "target", "split"] = "heldout"
        with_history = (frame["split"] == "train") & (frame["test_role"] != "history")
        history_heldout = bool(with_history.sum() >= min_train_share * len(frame))
        if history_heldout:
            frame.loc[frame["test_role"] == "history", "split"] = "heldout"
        if not (frame["split"] == "train").any():
            raise DataError(
                scenario_data.folder / "splits.parquet",
                f"scenario {scenario!r}: the test users' target items and the hash share {heldout_fraction} "
                f"hold out every one of its {len(frame)} images; nothing is left to train on",
                column="split",
            )
        frames.append(frame.assign(history_heldout=history_heldout))
    if not frames:
        raise DataError(
            ", ".join(map(str, prepared.values())) or "<no scenario>", "no item with an image in the prepared scenarios"
        )
    return pd.concat(frames, ignore_index=True)


def heldout_summary(pairs: pd.DataFrame) -> dict[str, dict[str, int | bool]]:
    """What the zoo held out, per scenario, from :func:`load_pairs`' table.

    Returns:
        `{scenario: {images, train, heldout, test_targets, test_history,
        test_history_heldout, test_history_in_training, hash_only,
        history_heldout}}`: images with an image file; the train and
        held-out counts; the test users' distinct target items and
        (non-target) history items; how many of those history items are
        held out and how many the zoo still trains on; held-out items no
        test user touches (the hash share); and whether the scenario could
        afford to hold out history.
    """
    out: dict[str, dict[str, int | bool]] = {}
    for scenario, frame in pairs.groupby("scenario", sort=True):
        heldout = frame["split"] == "heldout"
        history = frame["test_role"] == "history"
        out[str(scenario)] = {
            "images": len(frame),
            "train": int((~heldout).sum()),
            "heldout": int(heldout.sum()),
            "test_targets": int((frame["test_role"] == "target").sum()),
            "test_history": int(history.sum()),
            "test_history_heldout": int((history & heldout).sum()),
            "test_history_in_training": int((history & ~heldout).sum()),
            "hash_only": int((heldout & (frame["test_role"] == "")).sum()),
            "history_heldout": bool(frame["history_heldout"].iloc[0]),
        }
    return out
