"""The clothing scenario: Alibaba POG, or the default world of rendered garments.

Declared here and nowhere else: the `prepare.clothing` section, the loader
(the default world of `pmg.data.world.clothing`, or POG files), the prompt
templates (`clothing.yaml`), the zoo caption (the item title, e.g. "blue
dotted pullover") and the ground-truth check: the user's latent colour and
pattern measured on the output image's pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from PIL import Image
from pydantic import Field, model_validator

from pmg.data.dataset import ScenarioData
from pmg.data.store import PreparedScenario
from pmg.scenarios.base import (
    HIT_COLUMNS,
    TARGET_IMAGE,
    LoadContext,
    Scenario,
    ScenarioSection,
    item_attributes,
    latent_preferences,
)

NAME = "clothing"


class ClothingSource(ScenarioSection):
    """Where the clothing scenario's data comes from (`prepare.clothing`).

    Attributes:
        source: `default` (simulated users over a rendered garment catalogue)
            or `pog` (Alibaba POG `user_data.txt`/`item_data.txt`/`outfit_data.txt`).
        path: folder of the POG files.
        images: folder of POG item images named `<item_id>.<ext>`.
        history_len: history items per user (paper: last 5 clicked with images).
        n_items: catalogue size of the default world.
        n_users: simulated users of the default world.
        clicks_per_user: inclusive range of clicks a simulated user makes.
        preference_strength: probability that a simulated click follows the
            user's latent preference rather than being uniform.
        max_users: keep at most this many users; null keeps all.
    """

    source: Literal["default", "pog"] = "default"
    path: str | None = None
    images: str | None = None
    history_len: int = Field(default=5, ge=1)
    n_items: int = Field(default=600, ge=10)
    n_users: int = Field(default=200, ge=1)
    clicks_per_user: tuple[int, int] = (8, 14)
    preference_strength: float = Field(default=0.8, ge=0.0, le=1.0)
    max_users: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ClothingSource:
        if self.source == "pog" and not (self.path and self.images):
            raise ValueError("source 'pog' needs 'path' (the POG text files) and 'images' (item images)")
        low, high = self.clicks_per_user
        if low > high or low < self.history_len + 2:
            raise ValueError(
                f"clicks_per_user {list(self.clicks_per_user)} must be an ordered range starting at "
                f"history_len + 2 = {self.history_len + 2} or more"
            )
        return self


def load(cfg: ClothingSource, ctx: LoadContext) -> ScenarioData:
    """The default world (`pmg.data.world.clothing`), or POG files with their images normalised."""
    if cfg.source == "default":
        from pmg.data.world.clothing import build_clothing_world

        return build_clothing_world(
            cfg, assets=ctx.assets, images_dir=ctx.scenario_dir / "images", size=ctx.image_size, seed=ctx.seed
        )
    from pmg.data.images import materialise_images
    from pmg.data.pog import load_pog

    data = load_pog(Path(cfg.path), Path(cfg.images))
    data.items, image_skips = materialise_images(data.items, ctx.scenario_dir, ctx.image_size)
    data.skipped.update(image_skips)
    return data


def caption(title: str, attributes: dict) -> str:
    """A garment's caption is its title ("blue dotted pullover")."""
    return title.lower()


def clothing_hits(outputs: pd.DataFrame, prepared: PreparedScenario, *, include_target_image: bool = True) -> pd.DataFrame:
    """Colour and pattern hits of clothing outputs against the users' latent preference.

    The colour and pattern are measured on the output image's pixels with
    :func:`pmg.data.world.clothing.measure_colour` / `measure_pattern`. Hit
    rate per variant; the non-personalised variant (`none`) is the baseline,
    and the target item's own image (pseudo-variant `target_image`) shows what
    a generator that copied the target would score. Because targets are
    drawn independently of the preference, most of them have another colour:
    the rate among pairs whose *target* colour (pattern) differs from the
    preferred one is where personalisation has to change the image
    (`target_differs`).

    Args:
        outputs: one row per output: `variant`, `user_id`, `target_item`,
            `image` (path of the output PNG).
        prepared: the clothing `PreparedScenario` (with `ground_truth`).
        include_target_image: add the pseudo-variant `target_image` (the
            target item's own image, once per pair).

    Returns:
        `GroundTruthHits` rows (`check` = `colour` or `pattern`); users with
        no ground truth are left out. An unreadable or missing image is a
        miss with `observed` = `unreadable`.
    """
    from pmg.data.world.clothing import measure_colour, measure_pattern

    preferences = latent_preferences(prepared)
    rows: list[dict] = []

    def measure(path: Path | None) -> tuple[str, str]:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, TypeError, AttributeError):
            return "unreadable", "unreadable"
        return measure_colour(rgb) or "none", measure_pattern(rgb)

    def add(variant: str, user: str, target: str, colour: str, pattern: str) -> None:
        wanted = preferences[user]
        target_attrs = item_attributes(prepared, target)
        for check, expected, observed, target_value in (
            ("colour", wanted.get("colour"), colour, target_attrs.get("colour")),
            ("pattern", wanted.get("pattern"), pattern, target_attrs.get("elements")),
        ):
            rows.append(
                {
                    "scenario": NAME,
                    "variant": variant,
                    "user_id": user,
                    "target_item": target,
                    "check": check,
                    "expected": str(expected),
                    "observed": observed,
                    "value": float(observed == expected),
                    "target_differs": None if target_value is None else bool(target_value != expected),
                }
            )

    pairs_seen: set[tuple[str, str]] = set()
    for row in outputs.itertuples(index=False):
        user, target = str(row.user_id), str(row.target_item)
        if user not in preferences:
            continue
        add(str(row.variant), user, target, *measure(row.image))
        if include_target_image and (user, target) not in pairs_seen:
            pairs_seen.add((user, target))
            add(TARGET_IMAGE, user, target, *measure(prepared.image_file(target)))
    return pd.DataFrame(rows, columns=HIT_COLUMNS)


def ground_truth(
    prepared: PreparedScenario, *, outputs: pd.DataFrame | None, keywords: pd.DataFrame | None
) -> pd.DataFrame | None:
    """Pixel checks of the outputs (default world only: it needs the latent preferences)."""
    if prepared.ground_truth is None or outputs is None or not len(outputs):
        return None
    return clothing_hits(outputs, prepared)


SCENARIO = Scenario(
    name=NAME,
    section=ClothingSource,
    load=load,
    seed_index=0,
    prompts="clothing.yaml",
    noun="clothing items",
    caption=caption,
    assets=("fashion-mnist",),
    ground_truth=ground_truth,
    ground_truth_note=(
        "Share of outputs whose garment colour / pattern, measured on the pixels, is the user's latent "
        "preferred one; *_target_differs: only pairs whose target item has another colour / pattern "
        "(where personalisation must change the image). target_image: the target item's own image."
    ),
)
