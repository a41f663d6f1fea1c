"""The prepared scenario folder: where `prepare` writes and later stages read.

Layout of `<prepare.out>/<scenario>/`::

    items.parquet          schemas.Items (image_path relative to this folder)
    interactions.parquet   schemas.Interactions
    conversations.parquet  schemas.Conversations (may have no rows)
    splits.parquet         schemas.Splits
    ground_truth.parquet   schemas.GroundTruth (simulated users only)
    report.parquet         schemas.PrepareReport (what was kept / skipped)
    images/                RGB PNG item images

The `prepare` stage builds the folder in a staging folder and swaps it into
place as a whole (`pmg.io.output_folder`), so readers never see a
half-prepared scenario; `write_scenario` writes the tables into it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pmg import schemas
from pmg.errors import DataError
from pmg.io import read_table, write_table

TABLES = {
    "items": schemas.Items,
    "interactions": schemas.Interactions,
    "conversations": schemas.Conversations,
    "splits": schemas.Splits,
    "report": schemas.PrepareReport,
}


@dataclass(frozen=True)
class PreparedScenario:
    """A prepared scenario as later stages read it.

    Attributes:
        folder: the scenario folder (image paths are relative to it).
        items, interactions, conversations, splits, report: validated tables.
        ground_truth: validated table, or None for real data.
    """

    folder: Path
    scenario: str
    items: pd.DataFrame
    interactions: pd.DataFrame
    conversations: pd.DataFrame
    splits: pd.DataFrame
    report: pd.DataFrame
    ground_truth: pd.DataFrame | None

    def image_file(self, item_id: str) -> Path | None:
        """Absolute path of an item's image, or None when it has none.

        Raises:
            DataError: the item id is not in the catalogue.
        """
        match = self.items.loc[self.items["item_id"] == item_id, "image_path"]
        if match.empty:
            raise DataError(self.folder / "items.parquet", f"unknown item id {item_id!r}", column="item_id")
        value = match.iloc[0]
        return None if pd.isna(value) else self.folder / value


def report_frame(scenario: str, kept: Counter[str], skipped: Counter[str]) -> pd.DataFrame:
    """Build the `PrepareReport` table from kept and skipped counters."""
    rows = [{"scenario": scenario, "kind": "kept", "reason": k, "count": int(v)} for k, v in sorted(kept.items())]
    rows += [
        {"scenario": scenario, "kind": "skipped", "reason": k, "count": int(v)} for k, v in sorted(skipped.items())
    ]
    return schemas.PrepareReport.validate(pd.DataFrame(rows, columns=["scenario", "kind", "reason", "count"]))


def write_scenario(
    folder: Path,
    *,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    conversations: pd.DataFrame,
    splits: pd.DataFrame,
    report: pd.DataFrame,
    ground_truth: pd.DataFrame | None,
) -> None:
    """Validate and write all tables into `folder` (a staging folder of `pmg.io.output_folder`).

    Images are expected to be in `folder/images/` already. A table that does
    not validate raises before the staging folder is swapped in, so the
    previous scenario folder stays untouched.
    """
    folder = Path(folder)
    write_table(items, folder / "items.parquet", schemas.Items)
    write_table(interactions, folder / "interactions.parquet", schemas.Interactions)
    write_table(conversations, folder / "conversations.parquet", schemas.Conversations)
    write_table(splits, folder / "splits.parquet", schemas.Splits)
    write_table(report, folder / "report.parquet", schemas.PrepareReport)
    if ground_truth is not None:
        write_table(ground_truth, folder / "ground_truth.parquet", schemas.GroundTruth)


def read_scenario(folder: str | Path) -> PreparedScenario:
    """Read and validate a prepared scenario folder.

    Raises:
        DataError: a table is missing or invalid, or the tables disagree
            (a split names an item that is not in the catalogue).
    """
    folder = Path(folder)
    tables = {name: read_table(folder / f"{name}.parquet", schema) for name, schema in TABLES.items()}
    gt_path = folder / "ground_truth.parquet"
    ground_truth = read_table(gt_path, schemas.GroundTruth) if gt_path.exists() else None
    scenarios = set(tables["items"]["scenario"])
    if len(scenarios) != 1:
        raise DataError(folder / "items.parquet", f"expected one scenario, found {sorted(scenarios)}", column="scenario")
    known = set(tables["items"]["item_id"])
    splits = tables["splits"]
    for column in ("target_item", "supervision_item"):
        unknown = ~splits[column].isin(known)
        if unknown.any():
            row = int(unknown.to_numpy().nonzero()[0][0])
            raise DataError(
                folder / "splits.parquet",
                f"item {splits[column].iloc[row]!r} is not in items.parquet",
                row=row,
                column=column,
            )
    return PreparedScenario(folder=folder, scenario=scenarios.pop(), ground_truth=ground_truth, **tables)
