"""(image, caption) pairs of the prepared scenarios, for training the mini zoo.

The mini profile has no pretrained CLIP or text-to-image model, so it trains
small ones on the default world's item images and captions. A caption is
what the image shows, in the words the method later uses for keywords; each
scenario declares its own (`pmg.scenarios.<name>`: the garment's title "blue
dotted pullover", the poster's genres "comedy romance movie poster", the
glyph's name "crying cat face emoji").

Every item is assigned to `train` or `heldout` by a hash of (scenario,
item id), so the split is stable when items are added or removed; quality
gates are measured on `heldout` only.
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


def load_pairs(prepared: Mapping[str, str | Path], *, heldout_fraction: float = 0.15) -> pd.DataFrame:
    """All items with an image of the given scenarios, captioned.

    Args:
        prepared: scenario -> its prepared folder (`<prepare.out>/<scenario>`), in order.
        heldout_fraction: share of items kept out of training for the gates.

    Returns:
        Columns `scenario`, `item_id`, `image_file` (absolute path),
        `caption`, `split` (`train` or `heldout`), `attributes` (dict).
    """
    rows = []
    for scenario, folder in prepared.items():
        scenario_data = read_scenario(folder)
        for item in scenario_data.items.itertuples(index=False):
            if pd.isna(item.image_path):
                continue
            attributes = json.loads(item.attributes)
            rows.append(
                {
                    "scenario": scenario,
                    "item_id": item.item_id,
                    "image_file": str((scenario_data.folder / item.image_path).resolve()),
                    "caption": caption_for_item(scenario, item.title, attributes),
                    "split": "heldout" if _heldout(scenario, item.item_id, heldout_fraction) else "train",
                    "attributes": attributes,
                }
            )
    if not rows:
        raise DataError(", ".join(map(str, prepared.values())) or "<no scenario>", "no item with an image in the prepared scenarios")
    return pd.DataFrame(rows)
