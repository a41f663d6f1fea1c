"""Rendered posters: genre in the colours, the title in the picture, marked synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from world_helpers import ml100k_movies, movie, movies, tree_bytes

from pmg.data.world.posters import (
    GENRES,
    UNKNOWN_GENRE,
    _fit_title,
    background,
    display_title,
    genre_spec,
    render_posters,
)
from pmg.errors import AssetError

# ------------------------------------------------------------------ pure functions


def test_display_title() -> None:
    assert display_title("Toy Story (1995)") == "Toy Story"
    assert display_title("Shawshank Redemption, The") == "The Shawshank Redemption"
    assert display_title("Babylon 5 (1994-1998)") == "Babylon 5"
    assert display_title("(1995)") == "(1995)"


def test_long_titles_are_wrapped_and_cut() -> None:
    font, lines = _fit_title("Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb", 128)
    assert 1 < len(lines) <= 3 and all(font.getlength(line) <= 0.92 * 128 for line in lines)
    font, lines = _fit_title("Supercalifragilisticexpialidociousness " * 2, 64)
    assert all(font.getlength(line) <= 0.92 * 64 for line in lines) and lines[0].endswith("…")


def test_genre_names_match_loosely() -> None:
    assert genre_spec("Children's") == genre_spec("Children") == GENRES["Children's"]
    assert genre_spec("sci-fi") == GENRES["Sci-Fi"]
    assert genre_spec("(no genres listed)") == UNKNOWN_GENRE


def test_every_genre_has_its_own_palette() -> None:
    palettes = [spec[2] for spec in GENRES.values()] + [UNKNOWN_GENRE[2]]
    assert len(set(palettes)) == len(palettes)
    means = {g: background([g], 16).reshape(-1, 3).mean(axis=0) for g in GENRES}
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(means[a] - means[b]).sum() > 20, (a, b)


def test_background_bands_follow_the_genres() -> None:
    one = background(["Horror"], 32)
    assert one.shape == (32, 32, 3) and one.dtype == np.uint8
    assert tuple(one[0, 0]) == GENRES["Horror"][2][0] and tuple(one[-1, 0]) == GENRES["Horror"][2][1]
    three = background(["Action", "Romance", "Sci-Fi"], 33)
    assert [tuple(three[y, 5]) for y in (0, 16, 32)] == [
        GENRES[g][2][0] for g in ("Action", "Romance", "Sci-Fi")
    ]
    assert background(["Western"], 8).tobytes() != background(["War"], 8).tobytes()


def test_movies_with_images_need_no_font(tmp_path: Path) -> None:
    items = movies(movie("1", "Heat", ["Action"], image_path="images/1.png"))
    out = render_posters(items, tmp_path / "images", 32, emoji_font=tmp_path / "absent.ttf")
    pd.testing.assert_frame_equal(out, items)


def test_missing_font_is_an_asset_error_when_a_poster_is_needed(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="pmg assets fetch"):
        render_posters(
            movies(movie("1", "Heat", ["Action"])), tmp_path / "images", 32, emoji_font=tmp_path / "x.ttf"
        )


# --------------------------------------------------------------- with the real font


def test_posters_are_rendered_and_labelled(emoji_font: Path, tmp_path: Path) -> None:
    items = movies(
        movie("1", "Toy Story", ["Animation", "Children's", "Comedy"]),
        movie("2", "Real Poster", ["Drama"], image_path="images/2.png"),
        movie("a/b", "No Year, No Genre", [], year=None),
    )
    out = render_posters(items, tmp_path / "images", 64, emoji_font=emoji_font)
    assert out.loc[1].equals(items.loc[1])  # a real poster is left alone
    for index in (0, 2):
        row = out.loc[index]
        assert row["image_path"].startswith("images/poster-") and row["image_path"].endswith(".png")
        attributes = json.loads(row["attributes"])
        assert attributes["poster"] == "synthetic"
        before = json.loads(items.loc[index, "attributes"])
        assert {k: v for k, v in attributes.items() if k != "poster"} == before
        image = Image.open(tmp_path / row["image_path"])
        assert image.mode == "RGB" and image.size == (64, 64)
        assert np.asarray(image).std() > 20
    assert out.loc[0, "image_path"] == "images/poster-1.png"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        Path(p).name for p in out.loc[[0, 2], "image_path"]
    )


def _poster(emoji_font: Path, folder: Path, title: str, genres: list[str], size: int = 64) -> np.ndarray:
    out = render_posters(movies(movie("1", title, genres)), folder / "images", size, emoji_font=emoji_font)
    return np.asarray(Image.open(folder / out.loc[0, "image_path"]), dtype=np.int16)


def test_the_title_is_drawn(emoji_font: Path, tmp_path: Path) -> None:
    heat = _poster(emoji_font, tmp_path / "a", "Heat", ["Crime"])
    fargo = _poster(emoji_font, tmp_path / "b", "Fargo", ["Crime"])
    title_band = slice(int(0.48 * 64), int(0.80 * 64))
    assert np.abs(heat[title_band] - fargo[title_band]).sum() > 2000
    assert np.array_equal(heat[:20], fargo[:20])  # the top (genre emoji) is the same


def test_the_genre_shows_in_the_colours(emoji_font: Path, tmp_path: Path) -> None:
    horror = _poster(emoji_font, tmp_path / "a", "Same", ["Horror"])
    musical = _poster(emoji_font, tmp_path / "b", "Same", ["Musical"])
    corner = (slice(0, 6), slice(0, 6))
    assert np.abs(horror[corner].mean(axis=(0, 1)) - np.asarray(GENRES["Horror"][2][0])).max() < 6
    assert np.abs(musical[corner].mean(axis=(0, 1)) - np.asarray(GENRES["Musical"][2][0])).max() < 6
    emoji_box = (slice(6, 30), slice(20, 44))
    assert np.abs(horror[emoji_box] - musical[emoji_box]).mean() > 30


def test_the_synthetic_mark_is_visible(emoji_font: Path, tmp_path: Path) -> None:
    poster = _poster(emoji_font, tmp_path, "Heat", ["Documentary"], size=128)
    tag = poster[-12:, -50:].mean(axis=-1)
    assert tag.min() < 60 and tag.max() > 180  # light letters on a dark box
    background_only = background(["Documentary"], 128)[-12:, -50:].astype(np.int16).mean(axis=-1)
    assert np.abs(tag - background_only).mean() > 30


def test_posters_are_deterministic(emoji_font: Path, tmp_path: Path) -> None:
    items = movies(movie("1", "Heat", ["Action", "Crime"]), movie("2", "Alien", ["Horror", "Sci-Fi"]))
    a = render_posters(items, tmp_path / "a" / "images", 48, emoji_font=emoji_font)
    b = render_posters(items, tmp_path / "b" / "images", 48, emoji_font=emoji_font)
    pd.testing.assert_frame_equal(a, b)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


def test_movielens_items_render(emoji_font: Path, ml100k_item: Path, tmp_path: Path) -> None:
    items = ml100k_movies(ml100k_item, limit=40)
    out = render_posters(items, tmp_path / "images", 32, emoji_font=emoji_font)
    assert out["image_path"].notna().all()
    assert len(list((tmp_path / "images").iterdir())) == 40
