"""Candidate selection: z on hand-computed scores, the non-positive cosine rule, ties, the stage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pmg.config import SelectConfig, load_params
from pmg.errors import DataError
from pmg.io import validate
from pmg.method.select import (
    chosen_candidates,
    cosines,
    score_candidates,
    select_candidates,
    select_best,
    selection_score,
)
from pmg.schemas import Candidates, Scores

ROOT = Path(__file__).resolve().parents[2]
EPS = 1e-6


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory):
    from pmg.config import ModelSpec
    from pmg.models.scorer import load_scorer
    from pmg.models.tiny import save_tiny_open_clip

    folder = save_tiny_open_clip(tmp_path_factory.mktemp("zoo") / "clip", seed=0)
    return load_scorer(ModelSpec(kind="open_clip", name="pmg-tiny-clip", path=str(folder)), "cpu")


def _images(n: int) -> list[Image.Image]:
    colours = [(220, 30, 30), (30, 200, 40), (20, 40, 230), (240, 240, 20), (10, 10, 10)]
    return [Image.new("RGB", (24, 24), colours[i % len(colours)]) for i in range(n)]


# ------------------------------------------------------------------- z itself


def test_z_is_the_papers_formula_on_positive_cosines() -> None:
    d_p = [0.30, 0.20, 0.25]
    d_t = [0.20, 0.30, 0.25]
    z, floored = selection_score(d_p, d_t, 0.5)
    expected = [0.5 * math.log(p) + 0.5 * math.log(t) for p, t in zip(d_p, d_t)]
    assert np.allclose(z, expected, rtol=0, atol=1e-12) and not floored.any()
    # alpha weights the preference term: 0.3·log 0.30 + 0.7·log 0.20 = -1.4879...
    z, _ = selection_score([0.30], [0.20], 0.3)
    assert z[0] == pytest.approx(0.3 * math.log(0.30) + 0.7 * math.log(0.20), abs=1e-12)
    assert z[0] == pytest.approx(-0.361192 - 1.126607, abs=1e-5)
    # alpha = 1 or 0 keeps one term only.
    assert selection_score([0.4], [0.9], 1.0)[0][0] == pytest.approx(math.log(0.4))
    assert selection_score([0.4], [0.9], 0.0)[0][0] == pytest.approx(math.log(0.9))


def test_non_positive_cosines_are_floored_and_lose_to_positive_ones() -> None:
    d_p = [0.0, -0.3, 0.2, 0.002, -0.1]
    d_t = [0.9, 0.9, 0.2, 0.002, 0.8]
    z, floored = selection_score(d_p, d_t, 0.5, min_cosine=EPS)
    assert np.isfinite(z).all()
    assert floored.tolist() == [True, True, False, False, True]
    # A non-positive cosine counts as the floor: zero and negative score alike.
    assert z[0] == z[1] == pytest.approx(0.5 * math.log(EPS) + 0.5 * math.log(0.9))
    # ... and lose to any candidate whose cosines are both above EPS ** 0.5 = 1e-3.
    assert z[3] > max(z[0], z[1], z[4]) and z[2] > z[3]
    # Among floored candidates the other score still orders them.
    assert z[0] > z[4]
    # Monotone: a higher cosine never lowers z.
    grid = np.linspace(-1, 1, 41)
    z_grid, _ = selection_score(grid, np.full_like(grid, 0.3), 0.5)
    assert (np.diff(z_grid) >= 0).all()
    with pytest.raises(ValueError, match="alpha must be in"):
        selection_score([0.1], [0.1], 1.5)
    with pytest.raises(ValueError, match="NaN"):
        selection_score([float("nan")], [0.1], 0.5)


def test_cosine_rounding_above_one_does_not_make_z_positive() -> None:
    z, _ = selection_score([1.0000002], [1.0], 0.5)
    assert z[0] == 0.0


# ------------------------------------------------------------------ selection


def _scores(z: list[float], *, user: str = "u1", target: str = "g5") -> pd.DataFrame:
    return pd.DataFrame(
        {"user_id": user, "scenario": "clothing", "target_item": target, "candidate": range(len(z)), "z": z}
    )


def test_select_best_takes_the_highest_z_and_the_lower_index_on_ties() -> None:
    frame = pd.concat(
        [
            _scores([-2.0, -1.0, -1.5]),
            _scores([-1.0, -0.5, -0.5, -3.0], user="u2"),  # tie: candidate 1 beats 2
            _scores([-4.0], user="u3"),
        ],
        ignore_index=True,
    )
    chosen = select_best(frame)
    picked = chosen[chosen["chosen"]].set_index("user_id")["candidate"].to_dict()
    assert picked == {"u1": 1, "u2": 1, "u3": 0}
    # Row order does not matter.
    shuffled = select_best(frame.sample(frac=1.0, random_state=3))
    assert shuffled[shuffled["chosen"]].set_index("user_id")["candidate"].to_dict() == picked
    with pytest.raises(ValueError, match="z is NaN"):
        select_best(_scores([-1.0, float("nan")]))


def test_a_candidate_with_a_negative_score_is_not_chosen() -> None:
    d_p, d_t = [-0.05, 0.01, 0.20], [0.95, 0.02, 0.01]
    z, _ = selection_score(d_p, d_t, 0.5)
    chosen = select_best(_scores(list(z)))
    # Candidate 0 has the best accuracy score by far, but no preference at all;
    # z of 1 is 0.5·(log 0.01 + log 0.02) = -4.26, of 2 is 0.5·(log 0.2 + log 0.01) = -3.11.
    assert z[2] == pytest.approx(-3.1073, abs=1e-4) and z[1] == pytest.approx(-4.2586, abs=1e-4)
    assert chosen.loc[chosen["chosen"], "candidate"].tolist() == [2]


# -------------------------------------------------------------------- scorer


def test_score_candidates_embeds_in_batches(scorer) -> None:
    calls = {"images": [], "texts": []}
    embed_images, embed_texts = scorer.embed_images, scorer.embed_texts

    class Spy:
        def embed_images(self, images):
            calls["images"].append(len(images))
            return embed_images(images)

        def embed_texts(self, texts):
            calls["texts"].append(len(texts))
            return embed_texts(texts)

    images = _images(5)
    frame = score_candidates(Spy(), images, "red wool", "green trousers", 0.5)
    assert calls == {"images": [5], "texts": [2]}
    assert list(frame.columns) == ["d_p", "d_t", "z", "floored"] and len(frame) == 5
    e_m, e = embed_images(images), embed_texts(["red wool", "green trousers"])
    assert np.allclose(frame["d_p"], (e_m @ e[0]).numpy(), atol=1e-5)
    assert np.allclose(frame["d_t"], (e_m @ e[1]).numpy(), atol=1e-5)
    assert frame["d_p"].between(-1, 1).all() and frame["d_t"].between(-1, 1).all()
    z, floored = selection_score(frame["d_p"], frame["d_t"], 0.5)
    assert np.array_equal(frame["z"], z) and np.array_equal(frame["floored"], floored)


def test_cosines_normalise() -> None:
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[6.0, 8.0], [-2.0, 0.0]])
    assert np.allclose(cosines(a, b), [1.0, -1.0])


# ---------------------------------------------------------------------- stage


def _candidates(folder: Path) -> pd.DataFrame:
    rows = []
    for user, target, n in (("u1", "g5", 5), ("u2", "g2", 3)):
        for k, image in enumerate(_images(n)):
            path = f"{user}/{target}/cand_{k}.png"
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            image.save(folder / path)
            rows.append(
                {"user_id": user, "scenario": "clothing", "target_item": target, "candidate": k,
                 "w_p": float(k), "w_t": float(4 - k) if k < 4 else 0.0, "seed": 10 + k,
                 "mode": "weighted_embeddings", "variant": "keywords", "preference_text": "red wool",
                 "target_text": "green trousers" if user == "u1" else "red shirt", "keyword_fallback": "",
                 "image_path": path}
            )
    return validate(pd.DataFrame(rows), Candidates, "candidates")


def test_select_stage_scores_every_candidate_and_chooses_one_per_pair(scorer, tmp_path: Path) -> None:
    from pmg.stages.select import select_in

    candidates = _candidates(tmp_path)
    params = load_params(ROOT / "params.yaml")
    scores, report = select_in(tmp_path, params.select, "clothing", candidates, scorer=scorer)
    assert len(scores) == 8 and list(scores.columns) == [
        "user_id", "scenario", "target_item", "candidate", "w_p", "w_t", "d_p", "d_t", "z", "floored", "chosen"
    ]
    assert scores.groupby(["user_id", "target_item"])["chosen"].sum().tolist() == [1, 1]
    for _, pair in scores.groupby("user_id"):
        best = pair.sort_values(["z", "candidate"], ascending=[False, True]).iloc[0]
        assert pair.loc[pair["chosen"], "candidate"].item() == best["candidate"]
    # Same numbers as scoring the pair alone.
    u1 = scores[scores["user_id"] == "u1"]
    alone = score_candidates(scorer, _images(5), "red wool", "green trousers", 0.5)
    assert np.allclose(u1["z"], alone["z"], atol=1e-5)
    chosen = chosen_candidates(scores, candidates)
    assert len(chosen) == 2 and {"image_path", "z"} <= set(chosen.columns)
    assert report.pairs == 2 and report.candidates == 8 and report.alpha == 0.5


def test_select_of_nothing_is_an_empty_valid_table(scorer, tmp_path: Path) -> None:
    empty = validate(_candidates(tmp_path).iloc[0:0], Candidates, "candidates")
    scores, report = select_candidates(SelectConfig(), "clothing", empty, [], scorer=scorer)
    assert scores.empty and report.pairs == 0
    # An empty selection reports only its counts (the metrics file of an empty scenario).
    assert report.as_dict() == {"scenario": "clothing", "pairs": 0, "candidates": 0, "floored": 0}


def test_select_refuses_images_that_do_not_match_the_candidates(scorer, tmp_path: Path) -> None:
    candidates = _candidates(tmp_path)
    with pytest.raises(ValueError, match="7 images for 8 candidates"):
        select_candidates(SelectConfig(), "clothing", candidates, _images(7), scorer=scorer)


# ---------------------------------------------------------------------- schema


def _score_rows() -> pd.DataFrame:
    z = [-2.0, -1.0, -1.0, -3.0]
    frame = pd.DataFrame(
        {"user_id": "u1", "scenario": "clothing", "target_item": "g5", "candidate": range(4),
         "w_p": [0.0, 1.0, 2.0, 4.0], "w_t": [4.0, 3.0, 2.0, 0.0], "d_p": 0.2, "d_t": 0.3, "z": z,
         "floored": False}
    )
    return select_best(frame)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chosen": [False, True, True, False]}, "one_chosen_per_pair"),  # two chosen for one pair
        ({"chosen": [False, False, False, False]}, "one_chosen_per_pair"),
        ({"chosen": [False, False, True, False]}, "chosen_has_best_z"),  # a tie goes to the lower index
        ({"chosen": [True, False, False, False]}, "chosen_has_best_z"),
        ({"w_p": [0.0, -1.0, 2.0, 4.0]}, "weights_nonnegative_not_both_zero"),
        ({"w_p": [0.0, 0.0, 2.0, 4.0], "w_t": [4.0, 0.0, 2.0, 0.0]}, "weights_nonnegative_not_both_zero"),
        ({"d_p": [0.2, 1.5, 0.2, 0.2]}, "d_p"),
        ({"z": [-2.0, 0.5, -1.0, -3.0]}, "column 'z'"),
    ],
)
def test_scores_schema_rejects_bad_rows(change: dict, message: str) -> None:
    rows = _score_rows()
    assert rows["chosen"].tolist() == [False, True, False, False]
    validate(rows, Scores, "scores.parquet")
    for column, values in change.items():
        rows[column] = values
    with pytest.raises(DataError, match=message):
        validate(rows, Scores, "scores.parquet")


def test_select_config_bounds() -> None:
    assert SelectConfig().alpha == 0.5
    with pytest.raises(ValueError, match="alpha"):
        SelectConfig(alpha=1.5)
    with pytest.raises(ValueError, match="min_cosine"):
        SelectConfig(min_cosine=0)


def test_generate_then_select_end_to_end(scorer, tmp_path: Path) -> None:
    """The `Candidates` folder the generate stage writes is what the select stage reads."""
    import json

    from pmg.models.generator import ImageGenerator
    from pmg.stages.generate import generate_into
    from pmg.stages.select import select_in
    from pmg.models.tiny import build_tiny_sd_pipeline

    params = load_params(
        ROOT / "params.yaml",
        overrides={"generate.steps": 2, "generate.height": 16, "generate.width": 16, "generate.use_soft": False,
                   "generate.out": str(tmp_path / "generate")},
    )
    row = {
        "user_id": "u1", "scenario": "clothing", "target_item": "g5",
        "preference_keywords": json.dumps(["red", "wool"]), "target_keywords": json.dumps(["green", "trousers"]),
        "preference_source": "llm", "target_source": "llm", "truncated_history": 0, "n_prompts": 6,
        "preference_grounding": None, "per_attribute": "{}", "target_answer": "", "template_version": "v",
        "model_id": "scripted",
    }
    items = pd.DataFrame(
        {"item_id": ["g5"], "scenario": "clothing", "title": ["green trousers"], "text": "", "attributes": "{}",
         "image_path": None}
    )
    folder = tmp_path / "generate" / "clothing"
    candidates, _ = generate_into(
        folder, params.generate, "clothing", pd.DataFrame([row]), {"u1": "liked red wool"}, items,
        generator=ImageGenerator(build_tiny_sd_pipeline(seed=0)), soft_model=None, seed=params.base.seed,
    )
    scores, _ = select_in(folder, params.select, "clothing", candidates, scorer=scorer)
    assert len(scores) == 5 and scores["chosen"].sum() == 1
    assert scores[["w_p", "w_t"]].values.tolist() == [[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]]
