"""The default clothing world: garments measurable on pixels, clicks that follow preferences."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from world_helpers import fake_silhouette, tree_bytes, write_idx

from pmg import schemas
from pmg.scenarios.clothing import ClothingSource
from pmg.data.dataset import make_splits
from pmg.data.world.clothing import (
    ACHROMATIC,
    CATEGORIES,
    COLOURS,
    PATTERNS,
    build_clothing_world,
    fill_holes,
    hue_degrees,
    load_fashion_mnist,
    measure_colour,
    measure_pattern,
    pattern_mask,
    render_garment,
    silhouette_mask,
    simulate_clicks,
)
from pmg.errors import AssetError

CHROMATIC = [c for c in COLOURS if c not in ACHROMATIC]


def _hue_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 360.0
    return min(gap, 360.0 - gap)


# ------------------------------------------------------------------ pure functions


def test_chromatic_colours_are_far_apart_in_hue() -> None:
    hues = {c: float(hue_degrees(np.asarray(COLOURS[c]) / 255.0)) for c in CHROMATIC}
    gaps = [_hue_gap(hues[a], hues[b]) for a, b in itertools.combinations(CHROMATIC, 2)]
    assert min(gaps) >= 30.0
    assert len(COLOURS) == 8 and ACHROMATIC <= set(COLOURS)


def test_fill_holes_fills_enclosed_regions_only() -> None:
    ring = np.zeros((9, 9), dtype=bool)
    ring[2:7, 2:7] = True
    ring[3:6, 3:6] = False
    filled = fill_holes(ring)
    assert filled[2:7, 2:7].all() and filled.sum() == 25
    open_ring = ring.copy()
    open_ring[4, 2:4] = False  # a channel from the hole to the outside
    assert not fill_holes(open_ring)[4, 4]


@pytest.mark.parametrize(
    ("pattern", "low", "high"),
    [("plain", 0.0, 0.0), ("striped", 0.4, 0.6), ("checked", 0.4, 0.6), ("dotted", 0.15, 0.4)],
)
def test_pattern_mask_coverage(pattern: str, low: float, high: float) -> None:
    mask = pattern_mask(pattern, 64)
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert low <= mask.mean() <= high


def test_unknown_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pattern"):
        pattern_mask("paisley", 32)


def test_silhouette_mask_fills_prints_and_leaves_a_margin() -> None:
    alpha, shading = silhouette_mask(fake_silhouette(0, 0), 64)
    assert alpha.shape == shading.shape == (64, 64)
    assert alpha[32, 32] == 1.0  # the dark print in the middle is garment
    assert alpha[:4].max() == 0.0 and alpha[:, :4].max() == 0.0  # white margin
    assert 0.8 <= shading.min() and shading.max() <= 1.0


@pytest.mark.parametrize("colour", list(COLOURS))
def test_every_colour_is_measurable_on_pixels(colour: str) -> None:
    """Mean hue inside the mask is the named hue, whatever the pattern; black is unsaturated."""
    for label, pattern in zip((0, 1, 3, 7), PATTERNS, strict=True):
        silhouette = fake_silhouette(label, 1)
        image = render_garment(silhouette, colour, pattern, 64)
        alpha, _ = silhouette_mask(silhouette, 64)
        inside = np.asarray(image, dtype=np.float32)[alpha > 0.99] / 255.0
        chroma = inside.max(axis=-1) - inside.min(axis=-1)
        if colour in ACHROMATIC:
            assert inside.max(axis=-1).mean() < 0.6 and chroma.max() < 0.02
        else:
            hues = np.radians(hue_degrees(inside))
            mean_hue = np.degrees(np.arctan2(np.sin(hues).mean(), np.cos(hues).mean())) % 360
            named = float(hue_degrees(np.asarray(COLOURS[colour]) / 255.0))
            assert _hue_gap(mean_hue, named) < 3.0
        assert measure_colour(image) == colour


@pytest.mark.parametrize(("colour", "pattern"), list(itertools.product(COLOURS, PATTERNS)))
def test_pattern_is_measurable_and_differs_from_plain(colour: str, pattern: str) -> None:
    silhouette = fake_silhouette(2, 0)
    image = render_garment(silhouette, colour, pattern, 64)
    assert measure_pattern(image) == pattern
    plain = np.asarray(render_garment(silhouette, colour, "plain", 64), dtype=np.float32)
    alpha, _ = silhouette_mask(silhouette, 64)
    inside = alpha > 0.99
    spread = np.asarray(image, dtype=np.float32)[inside].std(axis=0).sum()
    if pattern == "plain":
        assert spread == plain[inside].std(axis=0).sum()
    else:
        assert spread > 3 * plain[inside].std(axis=0).sum() + 10
        # The pattern stays inside the garment: the background is unchanged.
        assert np.array_equal(np.asarray(image)[alpha == 0], plain[alpha == 0].astype(np.uint8))


def test_measure_colour_of_a_blank_image_is_none() -> None:
    assert measure_colour(Image.new("RGB", (32, 32), (255, 255, 255))) is None


# -------------------------------------------------------------------------- users


def _catalogue(n_per_combo: int = 2, patterns: tuple[str, ...] = PATTERNS) -> pd.DataFrame:
    rows = []
    for k, (colour, pattern) in enumerate(itertools.product(COLOURS, patterns)):
        for copy in range(n_per_combo):
            attributes = {"category": "dress", "colour": colour, "elements": pattern}
            rows.append(
                {
                    "item_id": f"g{k:03d}{copy}",
                    "scenario": "clothing",
                    "title": f"{colour} {pattern} dress",
                    "text": "",
                    "attributes": json.dumps(attributes),
                    "image_path": f"images/g{k:03d}{copy}.png",
                }
            )
    return schemas.Items.validate(pd.DataFrame(rows))


def _clicked_attributes(items: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    attributes = {i: json.loads(a) for i, a in zip(items["item_id"], items["attributes"], strict=True)}
    frame = interactions.copy()
    frame["colour"] = [attributes[i]["colour"] for i in frame["item_id"]]
    frame["pattern"] = [attributes[i]["elements"] for i in frame["item_id"]]
    return frame


def test_with_full_strength_every_click_matches_the_ground_truth() -> None:
    items = _catalogue(n_per_combo=12)
    cfg = ClothingSource(n_users=40, clicks_per_user=(7, 10), preference_strength=1.0)
    interactions, truth = simulate_clicks(items, cfg, np.random.default_rng(3))
    schemas.Interactions.validate(interactions)
    schemas.GroundTruth.validate(truth)
    clicks = _clicked_attributes(items, interactions)
    for row in truth.itertuples():
        preference = json.loads(row.preferences)
        assert set(preference) == {"colour", "pattern"}
        mine = clicks[clicks["user_id"] == row.user_id]
        assert 7 <= len(mine) <= 10
        assert (mine["colour"] == preference["colour"]).all()
        assert (mine["pattern"] == preference["pattern"]).all()
        assert mine["item_id"].is_unique
        assert mine["timestamp"].is_monotonic_increasing and mine["timestamp"].is_unique
    assert interactions["rating"].isna().all()
    assert sorted(truth["user_id"]) == [f"c{k:04d}" for k in range(1, 41)]


def test_without_preference_clicks_are_uniform() -> None:
    items = _catalogue(n_per_combo=12)
    cfg = ClothingSource(n_users=60, clicks_per_user=(10, 10), preference_strength=0.0)
    interactions, truth = simulate_clicks(items, cfg, np.random.default_rng(0))
    clicks = _clicked_attributes(items, interactions)
    preferred = {r.user_id: json.loads(r.preferences) for r in truth.itertuples()}
    colour_share = np.mean([preferred[r.user_id]["colour"] == r.colour for r in clicks.itertuples()])
    assert colour_share < 0.25  # chance is 1/8


def test_preference_falls_back_to_colour_when_the_pattern_is_sold_out() -> None:
    items = _catalogue(n_per_combo=10, patterns=("plain",))
    cfg = ClothingSource(n_users=30, clicks_per_user=(7, 9), preference_strength=1.0)
    interactions, truth = simulate_clicks(items, cfg, np.random.default_rng(1))
    clicks = _clicked_attributes(items, interactions)
    for row in truth.itertuples():
        colour = json.loads(row.preferences)["colour"]
        assert (clicks.loc[clicks["user_id"] == row.user_id, "colour"] == colour).all()


def test_clicks_never_exceed_the_catalogue() -> None:
    items = _catalogue(n_per_combo=1).head(10)
    cfg = ClothingSource(n_users=3, clicks_per_user=(12, 14), preference_strength=1.0)
    interactions, _ = simulate_clicks(items, cfg, np.random.default_rng(0))
    assert interactions.groupby("user_id")["item_id"].nunique().eq(10).all()


# ------------------------------------------------------------ the world, fake data


def _small_cfg(**overrides: object) -> ClothingSource:
    values = {"n_items": 24, "n_users": 6, "clicks_per_user": (7, 9), "preference_strength": 0.8}
    values.update(overrides)
    return ClothingSource(**values)


def test_world_tables_validate_and_images_match(fake_fashion_assets: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "clothing"
    data = build_clothing_world(
        _small_cfg(), assets=fake_fashion_assets, images_dir=scenario / "images", size=32, seed=5
    )
    assert data.scenario == "clothing" and not data.skipped
    schemas.Items.validate(data.items)
    schemas.Interactions.validate(data.interactions)
    schemas.GroundTruth.validate(data.ground_truth)
    assert data.conversations.empty
    assert list(data.items["item_id"][:2]) == ["g00001", "g00002"]
    categories = {c.name: c for c in CATEGORIES}
    for row in data.items.itertuples():
        attributes = json.loads(row.attributes)
        assert set(attributes) == {"category", "colour", "material", "season", "style", "elements"}
        assert attributes["colour"] in COLOURS and attributes["elements"] in PATTERNS
        category = categories[attributes["category"]]
        assert attributes["material"] in category.materials and attributes["style"] in category.styles
        assert attributes["colour"] in row.title and category.noun in row.title
        assert attributes["colour"] in row.text.lower()
        assert row.image_path == f"images/{row.item_id}.png"
        image = Image.open(scenario / row.image_path)
        assert image.mode == "RGB" and image.size == (32, 32)
        assert measure_colour(image) == attributes["colour"]
    splits, skipped = make_splits(data, 5)
    assert len(splits) == 6 and not skipped


def test_world_is_deterministic(fake_fashion_assets: Path, tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        data = build_clothing_world(
            _small_cfg(),
            assets=fake_fashion_assets,
            images_dir=tmp_path / name / "images",
            size=32,
            seed=seed,
        )
        runs.append((data, tree_bytes(tmp_path / name)))
    (a, files_a), (b, files_b), (c, files_c) = runs
    assert files_a == files_b
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.ground_truth, b.ground_truth)
    assert files_a != files_c or not a.interactions.equals(c.interactions)


def test_missing_fashion_mnist_is_an_asset_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="pmg assets fetch") as err:
        build_clothing_world(_small_cfg(), assets=tmp_path, images_dir=tmp_path / "images", size=32, seed=0)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"plain text, not gzip", "not a readable gzip"),
        (gzip.compress(b"\x00\x00\x08\x01" + bytes(20)), "not an IDX"),
        (
            gzip.compress(
                b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(10)
            ),
            "size mismatch",
        ),
    ],
)
def test_corrupt_fashion_mnist_is_an_asset_error(
    fake_fashion_assets: Path, content: bytes, message: str
) -> None:
    path = fake_fashion_assets / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(AssetError, match=message):
        load_fashion_mnist(fake_fashion_assets / "fashion-mnist")


# ------------------------------------------------------------ the world, real data


def test_real_silhouettes_carry_colour_and_pattern(fashion_assets: Path, tmp_path: Path) -> None:
    cfg = _small_cfg(n_items=96, n_users=4)
    data = build_clothing_world(cfg, assets=fashion_assets, images_dir=tmp_path / "images", size=64, seed=0)
    attributes = [json.loads(a) for a in data.items["attributes"]]
    assert {a["colour"] for a in attributes} == set(COLOURS)
    assert {a["elements"] for a in attributes} == set(PATTERNS)
    patterns_right = 0
    for path, attr in zip(data.items["image_path"], attributes, strict=True):
        image = Image.open(tmp_path / path)
        assert measure_colour(image) == attr["colour"]
        patterns_right += measure_pattern(image) == attr["elements"]
    assert patterns_right >= 0.95 * len(attributes)


def test_a_class_without_images_is_an_asset_error(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    labels = np.asarray([0, 1, 2, 4, 5, 6, 7, 8, 9])  # no dress
    write_idx(
        folder / "t10k-images-idx3-ubyte.gz", np.stack([fake_silhouette(int(k), 0) for k in labels]), 2051
    )
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    with pytest.raises(AssetError, match=r"t10k-labels-idx1-ubyte.gz: no image of class \[3\]"):
        load_fashion_mnist(folder)
