"""`read_scenario` checks the tables against each other, as its docstring promises (issue 16, item 4).

Before, only the split's target and supervision items were checked: a
history item, an interaction or a conversation user missing from the
catalogue passed, and `personalize` or `describe` failed later with a
`StopIteration` or a `KeyError`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pmg import schemas
from pmg.data.store import read_scenario, report_frame, write_scenario
from pmg.errors import DataError
from pmg.io import output_folder, write_table


def _tables() -> dict[str, pd.DataFrame]:
    items = pd.DataFrame(
        [
            {
                "item_id": f"g{i}",
                "scenario": "clothing",
                "title": f"garment {i}",
                "text": "",
                "attributes": "{}",
                "image_path": f"images/g{i}.png",
            }
            for i in range(1, 5)
        ]
    )
    return {
        "items": items,
        "interactions": pd.DataFrame(
            [{"user_id": "u1", "item_id": f"g{i}", "timestamp": i, "rating": None} for i in range(1, 5)]
        ),
        "conversations": pd.DataFrame([{"user_id": "u1", "turn": 0, "text": "I like red."}]),
        "splits": pd.DataFrame(
            [
                {
                    "user_id": "u1",
                    "scenario": "clothing",
                    "history_items": json.dumps(["g1", "g2"]),
                    "target_item": "g3",
                    "supervision_item": "g4",
                    "split": "test",
                }
            ]
        ),
        "report": report_frame("clothing", Counter({"users": 1}), Counter()),
    }


def _write(folder: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write the tables as a prepared folder, unchecked (as a damaged or foreign folder would be)."""
    (folder / "images").mkdir(parents=True)
    for i in range(1, 5):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / "images" / f"g{i}.png")
    for name, schema in _schema_of().items():
        write_table(tables[name], folder / f"{name}.parquet", schema)
    return folder


def _schema_of() -> dict:
    return {
        "items": schemas.Items,
        "interactions": schemas.Interactions,
        "conversations": schemas.Conversations,
        "splits": schemas.Splits,
        "report": schemas.PrepareReport,
    }


def test_a_consistent_folder_reads(tmp_path: Path) -> None:
    prepared = read_scenario(_write(tmp_path / "clothing", _tables()))
    assert prepared.scenario == "clothing" and len(prepared.items) == 4


def _broken(kind: str) -> tuple[dict[str, pd.DataFrame], str, str]:
    tables = _tables()
    if kind == "history":
        tables["splits"].loc[0, "history_items"] = json.dumps(["g1", "gone"])
        return tables, "splits.parquet", "history_items"
    if kind == "interaction":
        tables["interactions"].loc[2, "item_id"] = "gone"
        return tables, "interactions.parquet", "item_id"
    if kind == "conversation":
        tables["conversations"].loc[0, "user_id"] = "stranger"
        return tables, "conversations.parquet", "user_id"
    tables["items"].loc[1, "image_path"] = "images/gone.png"
    return tables, "items.parquet", "image_path"


@pytest.mark.parametrize("kind", ["history", "interaction", "conversation", "image"])
def test_a_dangling_reference_is_named(tmp_path: Path, kind: str) -> None:
    tables, file, column = _broken(kind)
    folder = _write(tmp_path / "clothing", tables)
    with pytest.raises(DataError) as err:
        read_scenario(folder)
    assert err.value.path == str(folder / file) and err.value.column == column
    assert err.value.row is not None


@pytest.mark.parametrize("kind", ["history", "interaction", "conversation", "image"])
def test_write_scenario_refuses_it_and_keeps_the_old_folder(tmp_path: Path, kind: str) -> None:
    final = _write(tmp_path / "clothing", _tables())
    before = sorted(p.name for p in final.iterdir())
    tables, _, column = _broken(kind)
    with pytest.raises(DataError, match=column):
        with output_folder(final) as staging:
            (staging / "images").mkdir()
            for i in range(1, 5):
                Image.new("RGB", (8, 8)).save(staging / "images" / f"g{i}.png")
            write_scenario(staging, ground_truth=None, **tables)
    assert sorted(p.name for p in final.iterdir()) == before
    assert read_scenario(final).scenario == "clothing"
