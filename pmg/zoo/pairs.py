"""(image, caption) pairs of the prepared scenarios, for training the mini zoo.

The mini profile has no pretrained CLIP or text-to-image model, so it trains
small ones on the default world's item images and captions. A caption is
what the image shows, in the words the method later uses for keywords:

* clothing: the item title, e.g. "blue dotted pullover";
* movies: the genres of the (rendered) poster, e.g. "comedy romance movie
  poster" — the title is in the pixels but unreadable at the zoo's
  resolution, so it is left out;
* emoji: the Unicode name, e.g. "crying cat face emoji".

Every item is assigned to `train` or `heldout` by a hash of (scenario,
item id), so the split is stable when items are added or removed; quality
gates are measured on `heldout` only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pmg.data.store import read_scenario
from pmg.errors import DataError


def caption_for_item(scenario: str, title: str, attributes: dict) -> str:
    """The caption of one item image (see module docstring)."""
    if scenario == "clothing":
        return title.lower()
    if scenario == "movies":
        genres = [g.lower() for g in attributes.get("genres", [])]
        return " ".join(genres + ["movie", "poster"]) if genres else "movie poster"
    if scenario == "emoji":
        return f"{title.lower()} emoji"
    raise DataError("<items>", f"unknown scenario {scenario!r}", column="scenario")


def _heldout(scenario: str, item_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"{scenario}\0{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_pairs(prepared_root: str | Path, scenarios: Iterable[str], *, heldout_fraction: float = 0.15) -> pd.DataFrame:
    """All items with an image of the given scenarios, captioned.

    Args:
        prepared_root: `prepare.out`, holding one folder per scenario.
        scenarios: which scenarios to read.
        heldout_fraction: share of items kept out of training for the gates.

    Returns:
        Columns `scenario`, `item_id`, `image_file` (absolute path),
        `caption`, `split` (`train` or `heldout`), `attributes` (dict).
    """
    rows = []
    for scenario in scenarios:
        prepared = read_scenario(Path(prepared_root) / scenario)
        for item in prepared.items.itertuples(index=False):
            if pd.isna(item.image_path):
                continue
            attributes = json.loads(item.attributes)
            rows.append(
                {
                    "scenario": scenario,
                    "item_id": item.item_id,
                    "image_file": str((prepared.folder / item.image_path).resolve()),
                    "caption": caption_for_item(scenario, item.title, attributes),
                    "split": "heldout" if _heldout(scenario, item.item_id, heldout_fraction) else "train",
                    "attributes": attributes,
                }
            )
    if not rows:
        raise DataError(prepared_root, "no item with an image in the prepared scenarios")
    return pd.DataFrame(rows)
