"""The ablation results are committed as one set (issue 16).

`pmg.stages.ablations.run` wrote `pairs.parquet`, `issues.parquet`,
`ground_truth.parquet`, `ablations.md` and `report.json` one by one beside
`runs/`: a run that failed or was killed half-way left new tables beside the
old report. They now go into `results/`, built in a staging folder and
swapped in whole. The variants are stand-ins: only the stage's writing is
under test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from eval_helpers import build_world, catalogue, descriptions_frame, keywords_frame, make_params

from pmg import schemas
from pmg.evaluate.metrics import OUTPUT_COLUMNS, Evaluation
from pmg.io import write_table
from pmg.stages import ablations as stage

PAIR_COLUMNS = [
    "scenario", "variant", "user_id", "target_item", "reference", "position", "reference_item",
    "lpips_alex", "lpips_vgg", "ssim", "output_image",
]  # fmt: skip


def _result(lpips: float) -> stage.AblationResult:
    """One variant's result; `lpips` tells two runs' tables apart."""
    pairs = pd.DataFrame(
        [["clothing", "none", "u1", "g7", "target", 0, "g7", lpips, None, 0.5, "runs/x/clothing/u1/c0.png"]],
        columns=PAIR_COLUMNS,
    )
    return stage.AblationResult(
        evaluation=Evaluation(pairs=pairs),
        outputs=pd.DataFrame(columns=OUTPUT_COLUMNS),
        metrics={"none": {"n_pairs": 1, "lpips_alex_target": lpips}},
        runs={"none": "x"},
    )


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("fail_on", ["ablations.md", "report.json"])
def test_a_failure_half_way_keeps_the_previous_results_whole(
    tmp_path: Path, monkeypatch, fail_on: str
) -> None:
    params = make_params(tmp_path, evaluate={"ablations": ["none"]})
    where = catalogue(params, tmp_path)
    build_world(tmp_path / "prepared")
    write_table(keywords_frame(), where.keywords("clothing"), schemas.Keywords)
    write_table(descriptions_frame(), where.descriptions("clothing"), schemas.Descriptions)
    results = iter([_result(0.25), _result(0.75)])
    monkeypatch.setattr(stage, "run_variants", lambda *a, **k: next(results))
    stage.run(params, "clothing", catalogue=where, models=object(), log=lambda _: None)
    folder = where.ablation_results("clothing")
    before = _files(folder)
    assert set(before) == {
        "pairs.parquet", "issues.parquet", "ground_truth.parquet", "ablations.md", "report.json"
    }  # fmt: skip

    # The second run fails after the tables (and, for report.json, the markdown) are written.
    write_text, write_json = stage.write_text_atomic, stage.write_json_atomic

    def failing(write):
        def wrapper(path, value):
            if Path(path).name == fail_on:
                raise OSError(28, "No space left on device", str(path))
            return write(path, value)

        return wrapper

    monkeypatch.setattr(stage, "write_text_atomic", failing(write_text))
    monkeypatch.setattr(stage, "write_json_atomic", failing(write_json))
    with pytest.raises(OSError, match="No space left"):
        stage.run(params, "clothing", catalogue=where, models=object(), log=lambda _: None)
    assert _files(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["results"]  # no staging or lock left


def test_a_run_that_dies_while_scoring_keeps_its_previous_folder_whole(
    tmp_path: Path, monkeypatch, metric_models
) -> None:
    """Each run's `scores.parquet` is committed with its candidates (one swap, under the run folder's lock).

    It was written after `generate_into` had committed the run folder: a
    failure in between left new candidates without scores. The generation is
    the real `generate_into` with a stand-in for the method step.
    """
    from types import SimpleNamespace

    from eval_helpers import behaviour
    from PIL import Image

    import pmg.method.generate as method_generate
    from pmg.evaluate.ablations import variants

    def fake_pairs(cfg, scenario, pairs, behaviour, items, *, generator, soft_model, seed, save):
        rows = []
        for row in pairs.itertuples():
            relative = f"{row.user_id}/cand_0.png"
            save(relative, Image.new("RGB", (16, 16), (200, 30, 30)))
            rows.append(
                {
                    **{"user_id": row.user_id, "scenario": scenario, "target_item": row.target_item},
                    **{"candidate": 0, "w_p": 0.0, "w_t": 4.0, "seed": 1, "mode": "weighted_embeddings"},
                    **{"variant": "none", "preference_text": "", "target_text": "x", "keyword_fallback": ""},
                    "image_path": relative,
                }
            )
        return pd.DataFrame(rows), SimpleNamespace(as_dict=lambda: {"pairs": len(rows)})

    def fake_select(folder, cfg, scenario, candidates, *, scorer):
        scores = candidates[["user_id", "scenario", "target_item", "candidate", "w_p", "w_t"]]
        return scores.assign(d_p=0.2, d_t=0.3, z=-1.4, floored=False, chosen=True), None

    monkeypatch.setattr(method_generate, "generate_pairs", fake_pairs)
    params = make_params(tmp_path, evaluate={"ablations": ["none"]})
    where = catalogue(params, tmp_path)
    arguments = dict(
        catalogue=where,
        models=stage.AblationModels(generator=None, scorer=None, metric_models=metric_models),
        keywords=keywords_frame(),
        behaviour=behaviour(),
        adapters={},
        prepared=build_world(tmp_path / "prepared"),
    )
    stage.run_variants(params, "clothing", variants(params), select=fake_select, **arguments)
    (run,) = (where.ablations("clothing") / "runs").iterdir()
    folder = run / "clothing"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert Path("scores.parquet") in before and Path("candidates.parquet") in before

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the run is stopped while it scores

    with pytest.raises(KeyboardInterrupt):
        stage.run_variants(params, "clothing", variants(params), select=dies, **arguments)
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in run.iterdir()) == ["clothing"]  # no staging or lock left
