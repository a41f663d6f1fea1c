"""What a scenario declares: one frozen :class:`Scenario` per module of `pmg.scenarios`.

A scenario is everything that differs between clothing, movie posters and
emoji: where its data comes from and how its `prepare.<name>` section is
typed, its prompt templates, how the soft model's prompt names its items,
how the mini zoo captions its images, which default-world checks evaluate it
and how the report explains them. Everything else in the project is written
once for all scenarios and asks the registry (`pmg.scenarios.get`).

This module sits just above the data layer: a scenario's loader calls the
data loaders and world builders, its ground-truth checks read prepared
tables, and nothing here imports the model, method, evaluation or stage
layers (which all read the registry).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pmg.data.dataset import ScenarioData
from pmg.data.store import PreparedScenario
from pmg.frozen import Section

TARGET_IMAGE = "target_image"
"""Ground-truth pseudo-variant: the target item's own image measured like an output."""

HIT_COLUMNS = [
    "scenario",
    "variant",
    "user_id",
    "target_item",
    "check",
    "expected",
    "observed",
    "value",
    "target_differs",
]
"""Columns of the `GroundTruthHits` rows every ground-truth check returns (`pmg.schemas`)."""


class ScenarioSection(Section):
    """Base of a scenario's `prepare.<name>` section.

    Every section defines how its users are split: `history_len` (history
    items per user) and `max_users` (keep at most this many users, null for
    all); a section may define `min_rating` (ratings below it are not
    behaviour). They are not declared here so that each section keeps its
    own field order (and defaults) in `pmg config`.
    """

    def split_options(self) -> dict[str, Any]:
        """Keyword arguments of `pmg.data.dataset.make_splits` for this section."""
        return {
            "history_len": getattr(self, "history_len"),
            "min_rating": getattr(self, "min_rating", None),
            "max_users": getattr(self, "max_users"),
        }


@dataclass(frozen=True)
class LoadContext:
    """What a scenario's loader gets besides its section.

    Attributes:
        assets: the extracted assets folder (`assets.folder`).
        scenario_dir: an empty folder that becomes `<prepare.out>/<name>`;
            item images go to `scenario_dir / "images"` (image paths in the
            items table are relative to `scenario_dir`).
        image_size: side in pixels of item images (`prepare.image_size`).
        seed: this scenario's seed (see `Scenario.seed_index`).
    """

    assets: Path
    scenario_dir: Path
    image_size: int
    seed: int


GroundTruthCheck = Callable[..., "pd.DataFrame | None"]
"""`check(prepared, *, outputs, keywords) -> GroundTruthHits rows, or None when it does not apply`.

`outputs`: one row per evaluated output (`variant`, `user_id`,
`target_item`, `image` = the output PNG's path), or None; `keywords`: the
scenario's `Keywords` rows of the evaluated users, or None.
"""


@dataclass(frozen=True)
class Scenario:
    """Everything scenario-specific, declared once (see the module docstring).

    Attributes:
        name: the scenario's key: an entry of `base.scenarios`, the
            `prepare.<name>` section, its folders and the `scenario` column.
        section: the pydantic model of its `prepare.<name>` section.
        load: builds its canonical tables, `load(section, LoadContext) -> ScenarioData`.
        seed_index: its own stream of the world seed, `base.seed * 1000 +
            seed_index`, so adding a scenario changes no other's data.
        prompts: its prompt template file: a name in `pmg/method/prompts/`
            or an absolute path.
        noun: how the soft preference model's behaviour prompt names its
            items ("The user liked these <noun>:").
        caption: the mini zoo's caption of an item image, `caption(title, attributes) -> str`.
        ground_truth: its default-world checks (see `GroundTruthCheck`).
        ground_truth_note: the report's sentence saying what those checks measure.
        soft_adapter: whether the pipeline trains a soft preference adapter
            for it by default (the paper trains none for emoji); the
            default of `train_soft.scenarios`.
        assets: the extracted assets its default world reads (names in
            `assets.folder`); the `prepare` stage depends on them.
    """

    name: str
    section: type[ScenarioSection]
    load: Callable[[Any, LoadContext], ScenarioData]
    seed_index: int
    prompts: str
    noun: str
    caption: Callable[[str, dict], str]
    ground_truth: GroundTruthCheck | None = None
    ground_truth_note: str = ""
    soft_adapter: bool = True
    assets: tuple[str, ...] = ()


# ------------------------------------------------------- ground-truth helpers


def item_attributes(prepared: PreparedScenario, item_id: str) -> dict:
    """An item's `attributes` object ({} for an unknown item)."""
    row = prepared.items.loc[prepared.items["item_id"] == item_id, "attributes"]
    return json.loads(row.iloc[0]) if len(row) else {}


def latent_preferences(prepared: PreparedScenario) -> dict[str, dict]:
    """user -> latent preferences from the `GroundTruth` table ({} for real data)."""
    if prepared.ground_truth is None:
        return {}
    return {
        str(u): json.loads(p)
        for u, p in zip(prepared.ground_truth["user_id"], prepared.ground_truth["preferences"])
    }
