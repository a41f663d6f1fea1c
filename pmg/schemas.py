"""Pandera schemas of every table the project reads or writes.

One model per table, `strict` (no unexpected columns) and `coerce` (types are
cast, and a value that cannot be cast fails with its row and column). Tables are
validated after every read and before every write through `pmg.io`.

Cells that hold structures are JSON text, so the tables stay plain Parquet:

* `attributes` (items) and `preferences` (ground truth): a JSON object of
  attribute name to a string or list of strings.
* `history_items` (splits): a JSON array of item ids, oldest first.

Image paths are POSIX paths relative to the folder that holds the table.
"""

from __future__ import annotations

import json

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SCENARIOS = ("clothing", "movies", "emoji")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (TypeError, ValueError):
        return False


def _is_nonempty_json_list_of_str(text: str) -> bool:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return False
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) and v for v in value)


class Items(pa.DataFrameModel):
    """The item catalogue of one scenario: clothes, movies or emoji."""

    item_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(isin=SCENARIOS)
    title: Series[str] = pa.Field(str_length={"min_value": 1})
    text: Series[str]
    attributes: Series[str]
    image_path: Series[str] = pa.Field(nullable=True)

    @pa.check("attributes", element_wise=True, name="json_object")
    def _attributes_are_json_objects(cls, value: str) -> bool:  # noqa: N805
        return _is_json_object(value)

    class Config:
        strict = True
        coerce = True


class Interactions(pa.DataFrameModel):
    """User behaviour: one row per click, rating or use of an item.

    `rating` is the explicit rating where the source has one (MovieLens), else
    null (POG clicks, emoji use). `timestamp` is seconds since the epoch, or a
    sequence number where the source only gives an order.
    """

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    timestamp: Series[int] = pa.Field(ge=0)
    rating: Series[float] = pa.Field(nullable=True, ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "item_id", "timestamp"]


class Conversations(pa.DataFrameModel):
    """Conversation turns of a user, in order."""

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    turn: Series[int] = pa.Field(ge=0)
    text: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "turn"]


class Splits(pa.DataFrameModel):
    """The per-user split the method runs on.

    `history_items` are the behaviour the method reads (oldest first);
    `target_item` is the item generated for the user and evaluated;
    `supervision_item` is the last item of the user's sequence, whose image
    supervises the training of the soft preference embeddings. The three never
    overlap for one user.
    """

    user_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(isin=SCENARIOS)
    history_items: Series[str]
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    supervision_item: Series[str] = pa.Field(str_length={"min_value": 1})

    @pa.check("history_items", element_wise=True, name="nonempty_json_list_of_ids")
    def _history_is_json_list(cls, value: str) -> bool:  # noqa: N805
        return _is_nonempty_json_list_of_str(value)

    @pa.dataframe_check(name="target_supervision_history_disjoint")
    def _disjoint(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        def ok(row: pd.Series) -> bool:
            try:
                history = set(json.loads(row["history_items"]))
            except (TypeError, ValueError):
                return True  # reported by the column check
            return (
                row["target_item"] != row["supervision_item"]
                and row["target_item"] not in history
                and row["supervision_item"] not in history
            )

        return frame.apply(ok, axis=1).astype(bool)

    class Config:
        strict = True
        coerce = True


class GroundTruth(pa.DataFrameModel):
    """Latent preferences of simulated users (default world only).

    Never read by the method; only evaluation reads it, to check whether
    personalisation recovered what the simulation put in.
    """

    user_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(isin=SCENARIOS)
    preferences: Series[str]

    @pa.check("preferences", element_wise=True, name="json_object")
    def _preferences_are_json_objects(cls, value: str) -> bool:  # noqa: N805
        return _is_json_object(value)

    class Config:
        strict = True
        coerce = True


class PrepareReport(pa.DataFrameModel):
    """What `prepare` kept and skipped, one row per (scenario, reason)."""

    scenario: Series[str] = pa.Field(isin=SCENARIOS)
    kind: Series[str] = pa.Field(isin=("kept", "skipped"))
    reason: Series[str]
    count: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True
