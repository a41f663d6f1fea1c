"""Tiny models written to disk once per session, for the loaders to read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmg.config import ModelSpec
from pmg.models import tiny


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_llm(tmp_path_factory.mktemp("zoo") / "llm", seed=0)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_sd(tmp_path_factory.mktemp("zoo") / "sd", seed=0)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_open_clip(tmp_path_factory.mktemp("zoo") / "clip", seed=0)


@pytest.fixture(scope="session")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_gguf(tmp_path_factory.mktemp("zoo") / "gguf" / "tiny.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_generator(tiny_sd_dir: Path):
    from pmg.models.generator import load_generator

    return load_generator(ModelSpec(kind="diffusers", path=str(tiny_sd_dir), safety_checker=False), "cpu")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_clip_dir: Path):
    from pmg.models.scorer import load_scorer

    return load_scorer(ModelSpec(kind="open_clip", name="pmg-tiny-clip", path=str(tiny_clip_dir)), "cpu")
