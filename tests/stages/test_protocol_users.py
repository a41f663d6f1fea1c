"""Which users the stages describe, train on and evaluate (issue 11: held-out users)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pmg.config import load_params
from pmg.data.dataset import evaluated_rows, users_in_split
from pmg.errors import DataError
from pmg.stages.describe import described_users

ROOT = Path(__file__).resolve().parents[2]


def splits(test: int, validation: int, train: int) -> pd.DataFrame:
    names = ["test"] * test + ["validation"] * validation + ["train"] * train
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(len(names))], "split": names})


def params(**sets):
    return load_params(ROOT / "params.yaml", {"describe.max_users": 6, "describe.max_test_users": 3, **sets})


def test_adapter_scenarios_describe_test_users_first_then_learners() -> None:
    table = splits(test=5, validation=3, train=10)
    users = described_users(params(), "clothing", table)  # clothing trains an adapter
    split_of = dict(zip(table["user_id"], table["split"]))
    chosen = [split_of[u] for u in users]
    assert len(users) == 6 and chosen.count("test") == 3
    assert chosen.count("train") >= 1 and chosen.count("validation") >= 1


def test_scenarios_without_adapter_describe_only_test_users() -> None:
    table = splits(test=5, validation=3, train=10)
    users = described_users(params(), "emoji", table)  # emoji is not in train_soft.scenarios
    assert users == ["u0", "u1", "u2"]


def test_no_test_user_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="clothing: no test user"):
        described_users(params(), "clothing", splits(test=0, validation=3, train=10))


def test_evaluated_rows_keep_test_users_and_refuse_none() -> None:
    table = splits(test=2, validation=1, train=2)
    keywords = pd.DataFrame({"user_id": ["u0", "u1", "u2", "u3"], "target_item": list("abcd")})
    assert list(evaluated_rows(keywords, table, "movies")["user_id"]) == ["u0", "u1"]
    assert users_in_split(table, "train", "validation") == {"u2", "u3", "u4"}
    with pytest.raises(DataError, match="movies: none of its 2 users"):
        evaluated_rows(keywords.iloc[2:], table, "movies")
    with pytest.raises(ValueError, match="unknown user split"):
        users_in_split(table, "tests")
