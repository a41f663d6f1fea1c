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

    def fake_generate(params, scenario, folder, *, finish, **_):
        # As `generate_into`: the scores are written by `finish` into the staging folder.
        staging = folder.parent / f".{folder.name}.staging"
        staging.mkdir(parents=True)
        frame = pd.DataFrame({"candidate": [0], "image_path": ["0.png"]})
        finish(staging, frame)
        staging.rename(folder)
        return frame, None

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


def test_scores_are_committed_with_their_candidates(tmp_path: Path, monkeypatch) -> None:
    """A run that dies while scoring leaves the previous pair folder whole, scores included.

    `scores.parquet` was written after `generate_into` had committed the
    candidates folder, outside its lock: a failure (or a kill) in between left
    a folder of new candidates without scores, which `evaluate`-style readers
    take for an unfinished pair. The generator is the real `generate_into`
    with a stand-in for the method step that draws the images.
    """
    from types import SimpleNamespace

    from PIL import Image

    import pmg.method.generate as method_generate
    import pmg.method.soft as soft
    import pmg.stages.describe as describe
    import pmg.stages.keywords as keywords
    import pmg.stages.select as select

    build_prepared(tmp_path / "prepared")
    params = load_params(ROOT / "params.yaml", {"prepare.out": str(tmp_path / "prepared")})
    keyword_row = {"user_id": "u1", "preference_keywords": "[]", "target_keywords": "[]"}
    monkeypatch.setattr(describe, "describe_users", lambda *a, **k: (pd.DataFrame(), None))
    monkeypatch.setattr(keywords, "extract_keywords", lambda *a, **k: (pd.DataFrame([keyword_row]), None))
    monkeypatch.setattr(loaders, "has_adapter", lambda _: False)

    def fake_pairs(cfg, scenario, keywords, behaviour, items, *, generator, soft_model, seed, save):
        save("u1/cand_0.png", Image.new("RGB", (8, 8), (200, 30, 30)))
        row = {
            "user_id": "u1", "scenario": scenario, "target_item": "g7", "candidate": 0,
            "w_p": 1.0, "w_t": 0.0,
            "seed": 1, "mode": "weighted_embeddings", "variant": "keywords", "preference_text": "",
            "target_text": "x", "keyword_fallback": "", "image_path": "u1/cand_0.png",
        }  # fmt: skip
        return pd.DataFrame([row]), SimpleNamespace(as_dict=lambda: {"pairs": 1})

    monkeypatch.setattr(method_generate, "generate_pairs", fake_pairs)
    monkeypatch.setattr(soft, "behaviour_prompts", lambda *a, **k: {})
    scores = pd.DataFrame(
        {
            "user_id": ["u1"], "scenario": ["clothing"], "target_item": ["g7"], "candidate": [0],
            "w_p": [1.0], "w_t": [0.0], "d_p": [0.0], "d_t": [0.0], "z": [0.0], "floored": [False],
            "chosen": [True],
        }
    )  # fmt: skip
    monkeypatch.setattr(select, "select_in", lambda *a, **k: (scores, None))
    models = {"llm": object(), "captioner": object(), "generator": object(), "scorer": object()}

    result = stage.personalize(params, "clothing", "u1", "g7", out_dir=tmp_path / "out", models=models)
    folder = Path(result["out_dir"])
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert {str(p) for p in before} == {
        "candidates.parquet", "report.json", "scores.parquet", "u1/cand_0.png"
    }  # fmt: skip

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the run is stopped while it scores

    monkeypatch.setattr(select, "select_in", dies)
    with pytest.raises(KeyboardInterrupt):
        stage.personalize(params, "clothing", "u1", "g7", out_dir=tmp_path / "out", models=models)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging or lock left
