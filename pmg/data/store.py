"""The prepared scenario folder: where `prepare` writes and later stages read.

Layout of `<prepare.out>/<scenario>/`::

    items.parquet          schemas.Items (image_path relative to this folder)
    interactions.parquet   schemas.Interactions
    conversations.parquet  schemas.Conversations (may have no rows)
    splits.parquet         schemas.Splits
    ground_truth.parquet   schemas.GroundTruth (simulated users only)
    report.parquet         schemas.PrepareReport (what was kept / skipped)
    images/                RGB PNG item images

`prepare` builds the folder inside `pmg.io.output_folder` (an exclusive lock
on the scenario folder, a private staging folder, an atomic swap), so readers
never see a half-prepared scenario and two overlapping `prepare` runs never
mix their files; `read_scenario` reads the tables through
`pmg.io.read_folder`, so it never mixes two versions either.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pmg import schemas
from pmg.errors import DataError
from pmg.io import read_folder, read_table, write_table

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
    """Validate and write all tables into `folder` (a staging folder of `output_folder`).

    Images are expected to be in `folder/images/` already. Each table is
    validated, then the tables are checked against each other and the images
    (`check_scenario`), so a bad table fails here, the staging folder is
    dropped, and the previous scenario folder stays as it was.
    """
    tables = {
        "items": write_table(items, folder / "items.parquet", schemas.Items),
        "interactions": write_table(interactions, folder / "interactions.parquet", schemas.Interactions),
        "conversations": write_table(conversations, folder / "conversations.parquet", schemas.Conversations),
        "splits": write_table(splits, folder / "splits.parquet", schemas.Splits),
    }
    write_table(report, folder / "report.parquet", schemas.PrepareReport)
    if ground_truth is not None:
        write_table(ground_truth, folder / "ground_truth.parquet", schemas.GroundTruth)
    check_scenario(folder, **tables)


def _first_bad(path: Path, column: str, bad: pd.Series, values: pd.Series, message: str) -> None:
    """Raise a `DataError` for the first True row of `bad` (a boolean mask)."""
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(path, message.format(value=values.iloc[row]), row=row, column=column)


def check_scenario(
    folder: Path,
    *,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    conversations: pd.DataFrame,
    splits: pd.DataFrame,
) -> None:
    """Check that the tables of a scenario agree (the schemas check each alone).

    Every item a split or an interaction names is in the catalogue; every
    user with conversation turns is a user of the scenario (has a split or
    interactions); every image path stays inside the folder and names an
    existing file. Later stages index the catalogue by these ids and open
    these images, so a dangling reference fails here with the file, row and
    column instead of deep inside a stage.

    Raises:
        DataError: the first disagreement.
    """
    known = set(items["item_id"].astype(str))
    splits_file, inter_file = folder / "splits.parquet", folder / "interactions.parquet"
    for column in ("target_item", "supervision_item"):
        values = splits[column].astype(str)
        _first_bad(splits_file, column, ~values.isin(known), values, "item {value!r} is not in items.parquet")
    histories = splits["history_items"].map(json.loads)
    missing = histories.map(lambda ids: next((i for i in ids if i not in known), None))
    _first_bad(
        splits_file, "history_items", missing.notna(), missing, "history item {value!r} is not in items.parquet"
    )
    values = interactions["item_id"].astype(str)
    _first_bad(inter_file, "item_id", ~values.isin(known), values, "item {value!r} is not in items.parquet")
    users = set(splits["user_id"].astype(str)) | set(interactions["user_id"].astype(str))
    values = conversations["user_id"].astype(str)
    _first_bad(
        folder / "conversations.parquet",
        "user_id",
        ~values.isin(users),
        values,
        "user {value!r} has conversation turns but no split and no interactions",
    )
    root = folder.resolve()
    for row, relative in enumerate(items["image_path"]):
        if relative is None or pd.isna(relative):
            continue
        image = (folder / str(relative)).resolve()
        if not image.is_relative_to(root):
            raise DataError(
                folder / "items.parquet", f"image path {relative!r} leaves the scenario folder", row=row, column="image_path"
            )
        if not image.is_file():
            raise DataError(
                folder / "items.parquet", f"image {relative!r} does not exist", row=row, column="image_path"
            )


def read_scenario(folder: str | Path) -> PreparedScenario:
    """Read and validate a prepared scenario folder.

    The tables are read through `pmg.io.read_folder`, so a `prepare`
    finishing meanwhile cannot mix two versions, then checked against each
    other (`check_scenario`: every item a split or an interaction names is in
    the catalogue, conversation users are users of the scenario, images
    exist).

    Raises:
        DataError: a table is missing or invalid, or the tables disagree.
    """
    folder = Path(folder)
    gt_path = folder / "ground_truth.parquet"

    def read(folder: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None]:
        tables = {name: read_table(folder / f"{name}.parquet", schema) for name, schema in TABLES.items()}
        return tables, read_table(gt_path, schemas.GroundTruth) if gt_path.exists() else None

    tables, ground_truth = read_folder(folder, read)
    scenarios = set(tables["items"]["scenario"])
    if len(scenarios) != 1:
        raise DataError(folder / "items.parquet", f"expected one scenario, found {sorted(scenarios)}", column="scenario")
    check_scenario(
        folder,
        items=tables["items"],
        interactions=tables["interactions"],
        conversations=tables["conversations"],
        splits=tables["splits"],
    )
    return PreparedScenario(folder=folder, scenario=scenarios.pop(), ground_truth=ground_truth, **tables)
