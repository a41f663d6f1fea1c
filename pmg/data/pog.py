"""Loader for Alibaba's POG (iFashion) dataset, into the clothing scenario's tables.

The format relied on is the one the dataset's publishers document in the
README of github.com/wenyuer/POG (also restated by later work that reuses the
data, e.g. DiFashion's data notes): three comma-separated text files, UTF-8,
with no header line:

* `user_data.txt`: `user_id,item_id;item_id;...,outfit_id` -- a user's item
  click history, in click order, followed by the outfit they then clicked.
  A user may have several lines (one per outfit clicked).
* `item_data.txt`: `item_id,cate_id,pic_url,title` -- the title is a
  space-separated list of (Chinese) words. It is the last field, so it is
  split off with at most three commas and may itself hold commas.
* `outfit_data.txt`: `outfit_id,item_id;item_id;...` -- the items of each
  outfit.

Decisions:

* Clicks carry no time. A click's `timestamp` is its position in the user's
  click sequence: positions 0, 1, 2, ... along the line, and a user's later
  lines continue after the earlier ones, so file order is time order. Ratings
  are null (clicks are implicit feedback).
* Outfits are not used: PMG generates single items from a user's clicked
  items, as the paper does for POG. `outfit_data.txt` is therefore not read,
  and the `outfit_id` ending each user line is only checked to be present.
* Images come from the local `images` folder, `<item_id>.<ext>` (jpg, jpeg,
  png, webp); `pic_url` is kept in `attributes` but never fetched. Items
  without a local image keep their row with a null `image_path`; the split
  then leaves them out, as the paper keeps "the last clicked items with
  images".
* Item `attributes`: `{"category": cate_id, "title_words": [...],
  "pic_url": ...}`; `text`: "<title> (category <cate_id>)". The category is
  an opaque id in the published data, not a name. An item with an empty title
  is titled "item <item_id>" so the row stays usable.
* A first line equal to the documented field names (`item_id,cate_id,...`)
  is taken as a header and skipped: some copies of the data add one.

Bad input, following `pmg.data.movielens`: missing/empty files, lines with the
wrong number of fields, empty user or item ids, undecodable bytes and one item id with two
descriptions raise `DataError` naming the file, line and column. Skipped and
counted: `duplicate_row` (a user line identical to an earlier one),
`unknown_item` (a click on an item `item_data.txt` lacks), `empty_click_list`
(a user line without clicks), `duplicate_item_row` (a repeated item line).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pmg import schemas
from pmg.data.dataset import ScenarioData, empty_conversations
from pmg.data.images import index_images
from pmg.data.records import iter_records, read_text
from pmg.errors import DataError
from pmg.io import validate

SCENARIO = "clothing"

ITEM_COLUMNS = ("item_id", "cate_id", "pic_url", "title")
USER_COLUMNS = ("user_id", "item_ids", "outfit_id")


def _records(path: Path, columns: tuple[str, ...], *, maxsplit: int = -1):
    """Yield (line, fields) of a headerless POG file, checking the field count."""
    text = read_text(path, sep=",", columns=columns)
    first = True
    for line, fields in iter_records(path, text, sep=",", maxsplit=maxsplit):
        if first:
            first = False
            if tuple(fields) == columns or tuple(fields) == ("user_id", "item_id", "outfit_id"):
                continue
        if len(fields) != len(columns):
            column = columns[len(fields)] if len(fields) < len(columns) else None
            raise DataError(
                path,
                f"expected {len(columns)} comma-separated fields ({','.join(columns)}), found {len(fields)}",
                row=line,
                column=column,
            )
        for name, value in zip(columns, fields, strict=True):
            if name in ("item_id", "user_id") and not value:
                raise DataError(path, "id is empty", row=line, column=name)
        yield line, fields


def _load_items(path: Path, images: dict[str, Path], skipped: Counter[str]) -> pd.DataFrame:
    seen: dict[str, tuple[int, tuple[str, ...]]] = {}
    rows = []
    for line, fields in _records(path, ITEM_COLUMNS, maxsplit=len(ITEM_COLUMNS) - 1):
        item_id, cate_id, pic_url, title = fields
        if item_id in seen:
            earlier_line, earlier = seen[item_id]
            if earlier == tuple(fields):
                skipped["duplicate_item_row"] += 1
                continue
            raise DataError(
                path, f"item {item_id!r} is described differently on line {earlier_line} and here",
                row=line, column="item_id",
            )  # fmt: skip
        seen[item_id] = (line, tuple(fields))
        words = title.split()
        title = " ".join(words) or f"item {item_id}"
        attributes = {"category": cate_id, "title_words": words}
        if pic_url:
            attributes["pic_url"] = pic_url
        rows.append(
            {
                "item_id": item_id,
                "scenario": SCENARIO,
                "title": title,
                "text": f"{title} (category {cate_id})",
                "attributes": json.dumps(attributes, ensure_ascii=False),
                "image_path": images[item_id].as_posix() if item_id in images else None,
            }
        )
    if not rows:
        raise DataError(path, "file has no item lines")
    items = pd.DataFrame(rows)
    items["image_path"] = items["image_path"].astype(object)
    return validate(items, schemas.Items, path)


def load_pog(folder: str | Path, images: str | Path) -> ScenarioData:
    """Load POG click histories and items, with item images from a local folder.

    Args:
        folder: holds `user_data.txt` and `item_data.txt` (see module
            docstring; `outfit_data.txt` is not read).
        images: folder of item images named `<item_id>.<ext>`.

    Returns:
        The clothing scenario: one item per `item_data.txt` line, one
        interaction per click (timestamp = position in the user's clicks,
        rating null).

    Raises:
        DataError: see the module docstring.
    """
    folder = Path(folder)
    skipped: Counter[str] = Counter()
    item_path = folder / "item_data.txt"
    items = _load_items(item_path, index_images(images, what="POG image folder"), skipped)
    known = set(items["item_id"])

    user_path = folder / "user_data.txt"
    next_position: dict[str, int] = {}
    seen_lines: set[tuple[str, ...]] = set()
    users: list[str] = []
    clicked: list[str] = []
    positions: list[int] = []
    lines = 0
    for _line, fields in _records(user_path, USER_COLUMNS):
        lines += 1
        key = tuple(fields)
        if key in seen_lines:
            skipped["duplicate_row"] += 1
            continue
        seen_lines.add(key)
        user_id, item_ids, _outfit_id = fields
        clicks = [i.strip() for i in item_ids.split(";") if i.strip()]
        if not clicks:
            skipped["empty_click_list"] += 1
            continue
        start = next_position.get(user_id, 0)
        next_position[user_id] = start + len(clicks)
        for offset, item_id in enumerate(clicks):
            if item_id not in known:
                skipped["unknown_item"] += 1
                continue
            users.append(user_id)
            clicked.append(item_id)
            positions.append(start + offset)
    if lines == 0:
        raise DataError(user_path, "file has no user lines")
    if not users:
        raise DataError(
            user_path,
            "no click names an item of item_data.txt (are the two files from the same dataset?)",
        )
    interactions = pd.DataFrame(
        {
            "user_id": users,
            "item_id": clicked,
            "timestamp": np.asarray(positions, dtype=np.int64),
            "rating": np.full(len(users), np.nan),
        }
    )
    interactions = validate(interactions, schemas.Interactions, user_path)
    return ScenarioData(
        scenario=SCENARIO,
        items=items,
        interactions=interactions,
        conversations=empty_conversations(),
        ground_truth=None,
        skipped=+skipped,
    )
