"""Fixtures of the method tests (helpers in `method_helpers.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from method_helpers import build_prepared  # tests/method/ is on sys.path (pytest's default import mode)

from pmg.config import DescribeConfig, KeywordsConfig
from pmg.data.store import PreparedScenario


@pytest.fixture
def prepared(tmp_path: Path) -> PreparedScenario:
    return build_prepared(tmp_path / "prepared")


@pytest.fixture
def describe_cfg(tmp_path: Path) -> DescribeConfig:
    return DescribeConfig(max_users=None, max_text_chars=120, batch_size=4, llm_cache=str(tmp_path / "cache"))


@pytest.fixture
def keywords_cfg(tmp_path: Path) -> KeywordsConfig:
    return KeywordsConfig(batch_size=4, llm_cache=str(tmp_path / "cache"))
