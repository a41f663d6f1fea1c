"""`personalize` when no candidate comes out chosen (issue 16, item 4).

It raised a bare `StopIteration` and left an empty `scores.parquet` behind, which
looks like a finished pair. The models and method steps are stand-ins: only the
stage's own bookkeeping is under test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "method"))
from method_helpers import build_prepared  # noqa: E402

from pmg.config import load_params  # noqa: E402
from pmg.errors import DataError  # noqa: E402
from pmg.stages import loaders  # noqa: E402
from pmg.stages import personalize as stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rows", [0, 1], ids=["nothing-scored", "none-chosen"])
def test_no_chosen_candidate_is_a_data_error_and_no_scores_table(rows: int, tmp_path: Path, monkeypatch) -> None:
    import pmg.stages.describe as describe
    import pmg.stages.generate as generate
    import pmg.stages.keywords as keywords
    import pmg.stages.select as select

    build_prepared(tmp_path / "prepared")
    params = load_params(ROOT / "params.yaml", {"prepare.out": str(tmp_path / "prepared")})
    keyword_row = {"user_id": "u1", "preference_keywords": "[]", "target_keywords": "[]"}

    def fake_generate(params, scenario, folder, **_):
        folder.mkdir(parents=True)
        return pd.DataFrame({"candidate": [0], "image_path": ["0.png"]}), None

    monkeypatch.setattr(describe, "describe_users", lambda *a, **k: (pd.DataFrame(), None))
    monkeypatch.setattr(keywords, "extract_keywords", lambda *a, **k: (pd.DataFrame([keyword_row]), None))
    monkeypatch.setattr(generate, "generate_for", fake_generate)
    scores = pd.DataFrame(
        {
            "user_id": ["u1"], "scenario": ["clothing"], "target_item": ["g7"], "candidate": [0],
            "w_p": [1.0], "w_t": [0.0], "d_p": [0.0], "d_t": [0.0], "z": [0.0], "floored": [False],
            "chosen": [False],
        }
    )  # fmt: skip
    # No rows (the generator made nothing for the pair): an empty table passed the schema.
    monkeypatch.setattr(select, "select_in", lambda *a, **k: (scores.head(rows), None))
    models = {"llm": object(), "captioner": object(), "generator": object(), "scorer": object()}
    monkeypatch.setattr(loaders, "has_adapter", lambda _: False)

    with pytest.raises(DataError, match="no candidate was chosen"):
        stage.personalize(params, "clothing", "u1", "g7", out_dir=tmp_path / "out", models=models)
    assert not list((tmp_path / "out").rglob("scores.parquet"))
