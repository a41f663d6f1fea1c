"""Building the whole default world at the default size stays well under a minute of CPU.

CPU time of this process (`time.process_time`), not wall time: the world is
built in one process, and a loaded machine (CI beside other jobs) stretches
wall time without the code getting slower.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from world_helpers import ml100k_movies

from pmg.scenarios.clothing import ClothingSource
from pmg.scenarios.emoji import EmojiSource
from pmg.data.dataset import make_splits
from pmg.data.world.clothing import build_clothing_world
from pmg.data.world.emoji import build_emoji_world
from pmg.data.world.posters import render_posters


@pytest.mark.slow
def test_default_world_builds_in_under_a_minute(
    emoji_assets: Path, fashion_assets: Path, ml100k_item: Path, tmp_path: Path
) -> None:
    movies = ml100k_movies(ml100k_item)
    start = time.process_time()
    clothing = build_clothing_world(
        ClothingSource(), assets=fashion_assets, images_dir=tmp_path / "clothing" / "images", size=128, seed=0
    )
    emoji = build_emoji_world(
        EmojiSource(), assets=emoji_assets, images_dir=tmp_path / "emoji" / "images", size=128, seed=2
    )
    posters = render_posters(
        movies,
        tmp_path / "movies" / "images",
        128,
        emoji_font=emoji_assets / "noto-emoji" / "NotoColorEmoji.ttf",
    )
    elapsed = time.process_time() - start
    assert len(clothing.items) == 600 and len(posters) == len(movies) == 1682
    assert len(make_splits(clothing, 5)[0]) == 200 and len(make_splits(emoji, 4)[0]) == 120
    assert elapsed < 60, f"default world took {elapsed:.1f} CPU s"
