"""Fixtures of the default-world tests: real assets where present, fakes otherwise.

Real assets come from `$PMG_TEST_ASSETS` when set, else from the session
fixture `packaged_data_assets` (the real fetcher, see tests/conftest.py);
a missing asset fails the test, it is never skipped silently. Tests that need no
real asset use a fake Fashion-MNIST written here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from world_helpers import fake_silhouette, write_idx

REPO = Path(__file__).resolve().parents[3]


def _need(relative: str, packaged: Path) -> Path:
    """The assets folder holding `relative`: `$PMG_TEST_ASSETS` if set, else the real fetch."""
    override = os.environ.get("PMG_TEST_ASSETS")
    folder = Path(override) if override else packaged
    if not (folder / relative).is_file():
        pytest.fail(f"asset {relative} not found in {folder} (run `pmg assets fetch`)")
    return folder


@pytest.fixture(scope="session")
def emoji_assets(packaged_data_assets: Path) -> Path:
    """An assets folder with `noto-emoji/NotoColorEmoji.ttf`."""
    return _need("noto-emoji/NotoColorEmoji.ttf", packaged_data_assets)


@pytest.fixture(scope="session")
def emoji_font(emoji_assets: Path) -> Path:
    return emoji_assets / "noto-emoji" / "NotoColorEmoji.ttf"


@pytest.fixture(scope="session")
def fashion_assets(packaged_data_assets: Path) -> Path:
    """An assets folder with the real Fashion-MNIST test split."""
    folder = _need("fashion-mnist/t10k-images-idx3-ubyte.gz", packaged_data_assets)
    if not (folder / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail("asset fashion-mnist/t10k-labels-idx1-ubyte.gz not found")
    return folder


@pytest.fixture(scope="session")
def ml100k_item(packaged_data_assets: Path) -> Path:
    return _need("ml-100k/ml-100k.item", packaged_data_assets) / "ml-100k" / "ml-100k.item"


@pytest.fixture
def fake_fashion_assets(tmp_path: Path) -> Path:
    """An assets folder whose Fashion-MNIST test split holds 6 fake images per class."""
    folder = tmp_path / "assets" / "fashion-mnist"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 6)
    images = np.stack([fake_silhouette(int(label), k) for k, label in enumerate(labels)])
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images, 2051)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    return tmp_path / "assets"
