"""Candidate generation: weighted conditions, one batched call, seeds, ablations, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pmg.config import GenerateConfig, load_params
from pmg.errors import ConfigError, DataError
from pmg.io import read_table, validate
from pmg.method.generate import (
    FALLBACK_EMPTY_PREFERENCE,
    FALLBACK_TARGET_TITLE,
    GenerationRequest,
    build_conditions,
    candidate_image_path,
    candidate_seed,
    generate_candidates,
    pad_conditions,
    repeat_prompt,
    generate_pairs,
    request_from_keywords,
    weighted_condition,
)
from pmg.models.generator import ImageGenerator
from pmg.models.tiny import build_tiny_llama, build_tiny_sd_pipeline, tiny_llm_tokenizer
from pmg.schemas import Candidates

ROOT = Path(__file__).resolve().parents[2]
STEPS = 2
L = 4  # soft tokens
D = 32  # tiny text width
SIZE = 16  # pixels: 8x8 latents keep the tiny UNet fast
CFG = GenerateConfig(steps=STEPS, guidance_scale=5.0, height=SIZE, width=SIZE)
REQUEST = GenerationRequest(
    user_id="u1",
    scenario="clothing",
    target_item="g5",
    preference_keywords=("red", "wool", "striped"),
    target_keywords=("green", "denim", "trousers"),
    behaviour_prompt="The user liked these clothing items:\n- red wool coat\nDescribe the user's visual preference:",
)


@pytest.fixture(scope="module")
def generator() -> ImageGenerator:
    return ImageGenerator(build_tiny_sd_pipeline(seed=0))


@pytest.fixture(scope="module")
def soft_model():
    """The real soft preference model on a tiny random Llama (an untrained adapter)."""
    from pmg.method.soft import SoftPreferenceModel
    from pmg.models.llm import LocalLLM

    tokenizer = tiny_llm_tokenizer()
    llm = LocalLLM(build_tiny_llama(tokenizer, seed=0), tokenizer, model_id="tiny")
    return SoftPreferenceModel(llm, D, num_tokens=L, prefix_length=4, seed=0).eval()


class CountingGenerator:
    """Wraps an ImageGenerator and records the batch size of every `generate` call."""

    def __init__(self, inner: ImageGenerator) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompt_embeds, negative_prompt_embeds, **kwargs):
        self.calls.append(prompt_embeds.shape[0])
        return self.inner.generate(prompt_embeds, negative_prompt_embeds, **kwargs)


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


# ------------------------------------------------------------------ conditions


def test_weighted_condition_scales_by_the_larger_weight_and_drops_zero_parts() -> None:
    preference = torch.randn(L + 77, D, generator=torch.Generator().manual_seed(1))
    target = torch.randn(77, D, generator=torch.Generator().manual_seed(2))
    both = weighted_condition(preference, target, 1, 3)
    assert both.shape == (L + 154, D)
    assert torch.allclose(both[: L + 77], preference / 3) and torch.equal(both[L + 77 :], target)
    # Only the ratio matters.
    assert torch.equal(weighted_condition(preference, target, 2, 6), both)
    assert torch.equal(weighted_condition(preference, target, 2, 2), torch.cat([preference, target]))
    # A zero weight removes the part (no zero tokens, which would still take attention).
    assert torch.equal(weighted_condition(preference, target, 0, 4), target)
    assert torch.equal(weighted_condition(preference, target, 4, 0), preference)
    assert not torch.equal(weighted_condition(preference, target, 0, 4), weighted_condition(preference, target, 4, 0))
    with pytest.raises(ValueError, match="w_p must be finite and >= 0, got -1"):
        weighted_condition(preference, target, -1, 3)
    with pytest.raises(ValueError, match="leave nothing to condition on"):
        weighted_condition(None, target, 4, 0)


def test_pad_conditions_pads_at_the_end() -> None:
    pad = torch.full((D,), 7.0)
    stacked = pad_conditions([torch.ones(3, D), torch.zeros(5, D)], pad)
    assert stacked.shape == (2, 5, D)
    assert torch.equal(stacked[0, :3], torch.ones(3, D)) and torch.equal(stacked[0, 3:], pad.expand(2, D))
    assert torch.equal(stacked[1], torch.zeros(5, D))


def test_conditions_of_the_paper_weights(generator, soft_model) -> None:
    prompt_embeds, negative, plan = build_conditions(REQUEST, generator=generator, soft_model=soft_model, cfg=CFG, seed=0)
    assert [(c.candidate, c.w_p, c.w_t) for c in plan] == [(0, 0, 4), (1, 1, 3), (2, 2, 2), (3, 3, 1), (4, 4, 0)]
    # E_m (L) + E_k (77) + E_t (77): not 77 tokens, and one length for all.
    assert prompt_embeds.shape == negative.shape == (5, L + 154, D)
    target, keywords, empty = generator.encode_text([REQUEST.target_text, REQUEST.preference_text, ""])
    soft = soft_model.soft_preference_embeddings([REQUEST.behaviour_prompt])[0]
    preference = torch.cat([soft, keywords])  # E_p = concat(E_m, E_k)
    pad = empty[-1]
    # 0:4 is the plain target prompt, padded with the empty prompt's padding token.
    assert torch.equal(prompt_embeds[0, :77], target)
    assert torch.equal(prompt_embeds[0, 77:], pad.expand(L + 77, D))
    # 4:0 is concat(E_m, E_k) exactly as trained.
    assert torch.allclose(prompt_embeds[4, : L + 77], preference) and torch.equal(prompt_embeds[4, L + 77 :], pad.expand(77, D))
    # 1:3 turns the preference down to a third, the target stays as encoded.
    assert torch.allclose(prompt_embeds[1], torch.cat([preference / 3, target]))
    assert torch.allclose(prompt_embeds[2], torch.cat([preference, target]))
    assert not torch.equal(prompt_embeds[0], prompt_embeds[4])
    # The negative is the unconditional embedding of the same shape.
    assert torch.equal(negative, generator.unconditional_embeds(5, L + 154))


@pytest.mark.parametrize(
    ("use_soft", "use_keywords", "length", "candidates", "variant"),
    [
        (True, True, L + 154, 5, "soft+keywords"),
        (False, True, 154, 5, "keywords"),
        (True, False, L + 77, 5, "soft"),
        (False, False, 77, 1, "none"),  # no personalisation: the target keywords alone, once
    ],
)
def test_ablation_variants(generator, soft_model, use_soft, use_keywords, length, candidates, variant) -> None:
    cfg = CFG.model_copy(update={"use_soft": use_soft, "use_keywords": use_keywords})
    prompt_embeds, _, plan = build_conditions(REQUEST, generator=generator, soft_model=soft_model, cfg=cfg, seed=0)
    assert prompt_embeds.shape == (candidates, length, D)
    if not (use_soft or use_keywords):
        assert [(c.candidate, c.w_p, c.w_t) for c in plan] == [(0, 0.0, 4.0)]
        assert torch.equal(prompt_embeds[0], generator.encode_text([REQUEST.target_text])[0])
    if not use_soft:  # no soft model needed
        result = generate_candidates(REQUEST, generator=generator, soft_model=None, cfg=cfg, seed=0)
        assert {row["variant"] for row in result.rows} == {variant} and len(result.images) == candidates


def test_an_adapter_with_no_tokens_personalises_nothing(generator) -> None:
    class NoTokens:
        def soft_preference_embeddings(self, prompts):
            return torch.zeros(len(prompts), 0, D)

    cfg = CFG.model_copy(update={"use_keywords": False})
    prompt_embeds, _, plan = build_conditions(REQUEST, generator=generator, soft_model=NoTokens(), cfg=cfg, seed=0)
    assert [(c.candidate, c.w_p, c.w_t) for c in plan] == [(0, 0.0, 4.0)] and prompt_embeds.shape == (1, 77, D)


def test_image_paths_are_safe_for_any_id() -> None:
    assert candidate_image_path("u1", "g5", 3) == "u1/g5/cand_3.png"
    odd = candidate_image_path("a/b", "..", 0)
    assert odd.count("/") == 2 and ".." not in odd.split("/") and not odd.startswith(".")
    assert candidate_image_path("a/b", "x", 0) != candidate_image_path("a_b", "x", 0)


def test_use_soft_needs_a_model_and_a_prompt(generator) -> None:
    with pytest.raises(ValueError, match="use_soft is true but no soft preference model"):
        build_conditions(REQUEST, generator=generator, soft_model=None, cfg=CFG, seed=0)


# ------------------------------------------------------------------ generation


def test_one_batched_call_gives_k_distinct_reproducible_candidates(generator, soft_model) -> None:
    counting = CountingGenerator(generator)
    first = generate_candidates(REQUEST, generator=counting, soft_model=soft_model, cfg=CFG, seed=0)
    assert counting.calls == [5]  # all candidates of the pair in one call
    assert len(first.images) == 5 and all(im.size == (SIZE, SIZE) and im.mode == "RGB" for im in first.images)
    pixels = _pixels(first.images)
    assert np.isfinite(pixels).all()
    for i in range(5):
        for j in range(i + 1, 5):
            assert np.abs(pixels[i] - pixels[j]).max() > 10, (i, j)
    seeds = [row["seed"] for row in first.rows]
    assert len(set(seeds)) == 5 and all(0 <= s < 2**63 for s in seeds)
    again = generate_candidates(REQUEST, generator=generator, soft_model=soft_model, cfg=CFG, seed=0)
    assert np.array_equal(_pixels(again.images), pixels)
    assert [row["seed"] for row in again.rows] == seeds
    # Candidate k alone is candidate k of the batch (same condition, padding and seed).
    alone = generate_candidates(REQUEST, generator=generator, soft_model=soft_model, cfg=CFG, seed=0, only=[3])
    assert [row["candidate"] for row in alone.rows] == [3] and alone.rows[0]["seed"] == seeds[3]
    assert np.abs(_pixels(alone.images)[0] - pixels[3]).max() <= 1
    # Another base seed, other images.
    other = generate_candidates(REQUEST, generator=generator, soft_model=soft_model, cfg=CFG, seed=1, only=[3])
    assert np.abs(_pixels(other.images)[0] - pixels[3]).max() > 10
    with pytest.raises(ValueError, match=r"candidates \[7\] are not planned"):
        generate_candidates(REQUEST, generator=generator, soft_model=soft_model, cfg=CFG, seed=0, only=[7])


def test_shared_noise_gives_every_candidate_the_same_seed(generator) -> None:
    cfg = CFG.model_copy(update={"use_soft": False, "shared_noise": True, "weights": ((0, 1), (1, 0))})
    result = generate_candidates(REQUEST, generator=generator, soft_model=None, cfg=cfg, seed=0)
    assert result.rows[0]["seed"] == result.rows[1]["seed"] == candidate_seed(0, "clothing", "u1", "g5", 0)


def test_candidate_seed_is_a_stable_hash() -> None:
    seed = candidate_seed(0, "clothing", "u1", "g5", 2)
    assert seed == candidate_seed(0, "clothing", "u1", "g5", 2) and 0 <= seed < 2**63
    others = {
        candidate_seed(1, "clothing", "u1", "g5", 2),
        candidate_seed(0, "movies", "u1", "g5", 2),
        candidate_seed(0, "clothing", "u2", "g5", 2),
        candidate_seed(0, "clothing", "u1", "g6", 2),
        candidate_seed(0, "clothing", "u1", "g5", 3),
    }
    assert seed not in others and len(others) == 5


# -------------------------------------------------------------- repeat keywords


def test_repeat_prompt_is_the_demos() -> None:
    target, preference = ["green", "denim trousers"], ["red", "wool"]
    assert repeat_prompt(target, preference, 0) == "green, denim trousers"
    assert repeat_prompt(target, preference, 1) == "green, denim trousers, red, wool"
    assert repeat_prompt(target, preference, 2) == "green, denim trousers, red, wool, red, wool"
    assert repeat_prompt(target, [], 2) == "green, denim trousers"


def test_repeat_keywords_mode(generator, soft_model) -> None:
    cfg = CFG.model_copy(update={"mode": "repeat_keywords", "repeats": (1, 2)})
    prompt_embeds, _, plan = build_conditions(REQUEST, generator=generator, soft_model=soft_model, cfg=cfg, seed=0)
    assert [(c.candidate, c.w_p, c.w_t) for c in plan] == [(0, 1.0, 1.0), (1, 2.0, 1.0)]
    expected = generator.encode_text(
        ["green, denim, trousers, red, wool, striped", "green, denim, trousers, red, wool, striped, red, wool, striped"]
    )
    soft = soft_model.soft_preference_embeddings([REQUEST.behaviour_prompt])[0]
    assert prompt_embeds.shape == (2, L + 77, D)
    assert torch.allclose(prompt_embeds[0], torch.cat([soft, expected[0]]))
    assert torch.allclose(prompt_embeds[1], torch.cat([soft, expected[1]]))
    result = generate_candidates(REQUEST, generator=generator, soft_model=None, cfg=cfg.model_copy(update={"use_soft": False}), seed=0)
    assert {row["mode"] for row in result.rows} == {"repeat_keywords"} and len(result.images) == 2


# ----------------------------------------------------------------------- stage


def _keywords_row(user: str, target: str, preference: list[str], target_kw: list[str]) -> dict:
    return {
        "user_id": user, "scenario": "clothing", "target_item": target,
        "preference_keywords": json.dumps(preference), "target_keywords": json.dumps(target_kw),
        "preference_source": "llm", "target_source": "llm", "truncated_history": 0, "n_prompts": 6,
        "preference_grounding": None, "per_attribute": "{}", "target_answer": "", "template_version": "v",
        "model_id": "scripted",
    }


ITEMS = pd.DataFrame(
    {
        "item_id": ["g1", "g2", "g5"],
        "scenario": "clothing",
        "title": ["striped red coat", "red shirt", "plain green trousers"],
        "text": "",
        "attributes": "{}",
        "image_path": None,
    }
)


@pytest.fixture
def keywords_table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _keywords_row("u1", "g5", ["red", "wool"], ["green", "trousers"]),
            _keywords_row("u2", "g2", [], ["red", "shirt"]),  # empty preference: empty-string prompt
            _keywords_row("u3", "g404", ["blue"], ["blue"]),  # target not in the catalogue
            _keywords_row("u4", "g1", ["pink"], ["coat"]),  # no history
        ]
    )


@pytest.fixture
def params(tmp_path: Path):
    return load_params(
        ROOT / "params.yaml",
        overrides={"generate.steps": STEPS, "generate.height": SIZE, "generate.width": SIZE, "generate.out": str(tmp_path / "generate"), "generate.use_soft": False,
                   "generate.weights": [[0, 1], [1, 1], [1, 0]]},
    )


def _generate_into(params, keywords_table, behaviour, generator, folder):
    """The generate stage's writer (`pmg.stages.generate.generate_into`) on these tables."""
    from pmg.stages.generate import generate_into

    return generate_into(
        folder, params.generate, "clothing", keywords_table, behaviour, ITEMS,
        generator=generator, soft_model=None, seed=params.base.seed,
    )


def test_generate_stage_writes_images_then_the_table(params, keywords_table, generator, tmp_path) -> None:
    behaviour = {"u1": "liked red coats", "u2": "liked shirts", "u3": "liked blue"}
    folder = tmp_path / "generate" / "clothing"
    frame, report = _generate_into(params, keywords_table, behaviour, generator, folder)
    table = read_table(folder / "candidates.parquet", Candidates)
    pd.testing.assert_frame_equal(table, frame.reset_index(drop=True), check_like=True)
    assert list(frame["user_id"]) == ["u1"] * 3 + ["u2"] * 3
    assert list(frame["image_path"][:3]) == ["u1/g5/cand_0.png", "u1/g5/cand_1.png", "u1/g5/cand_2.png"]
    assert all((folder / p).is_file() for p in frame["image_path"])
    assert set(frame["variant"]) == {"keywords"} and set(frame["mode"]) == {"weighted_embeddings"}
    u2 = frame[frame["user_id"] == "u2"]
    assert set(u2["keyword_fallback"]) == {FALLBACK_EMPTY_PREFERENCE} and set(u2["preference_text"]) == {""}
    assert report.skipped == {"target item not in catalogue": ["u3"], "no history": ["u4"]}
    assert report.skipped_count == 2 and report.pairs_generated == 2 and report.candidates == 6
    assert json.loads((folder / "report.json").read_text())["skipped_count"] == 2
    assert not any(p.name.startswith(".") for p in (tmp_path / "generate").iterdir())  # no staging left


def test_a_failed_run_leaves_the_previous_output(params, keywords_table, generator, tmp_path) -> None:
    behaviour = {"u1": "a", "u2": "b"}
    folder = tmp_path / "generate" / "clothing"
    first, _ = _generate_into(params, keywords_table, behaviour, generator, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    class Failing(CountingGenerator):
        def generate(self, *args, **kwargs):
            if self.calls:
                raise RuntimeError("worker lost")
            return super().generate(*args, **kwargs)

    with pytest.raises(RuntimeError, match="worker lost"):
        _generate_into(params, keywords_table, behaviour, Failing(generator), folder)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert len(read_table(folder / "candidates.parquet", Candidates)) == len(first)
    assert [p.name for p in (tmp_path / "generate").iterdir()] == ["clothing"]


def test_generate_refuses_use_soft_without_a_model(params, keywords_table, generator) -> None:
    cfg = params.generate.model_copy(update={"use_soft": True})
    with pytest.raises(ConfigError, match="generate.use_soft is true but no soft preference model"):
        generate_pairs(
            cfg, "clothing", keywords_table, {}, ITEMS, generator=generator, soft_model=None, seed=0,
            save=lambda *_: pytest.fail("nothing is generated"),
        )


def test_empty_target_keywords_fall_back_to_title_words() -> None:
    row = _keywords_row("u9", "g5", ["red"], [])
    request = request_from_keywords(row, title="Plain Green Trousers", behaviour_prompt="x")
    assert request.target_keywords == ("plain", "green", "trousers")
    assert request.keyword_fallback == FALLBACK_TARGET_TITLE


# ---------------------------------------------------------------------- schema


def _candidate_rows() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"user_id": "u1", "scenario": "clothing", "target_item": "g5", "candidate": k, "w_p": float(k),
             "w_t": float(4 - k), "seed": 12345 + k, "mode": "weighted_embeddings", "variant": "soft+keywords",
             "preference_text": "red", "target_text": "green", "keyword_fallback": "",
             "image_path": f"u1/g5/cand_{k}.png"}
            for k in range(5)
        ]
    )


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("w_p", -1.0, "row 1.*weights_nonnegative_not_both_zero"),
        ("w_t", float("nan"), "row 1.*weights_nonnegative_not_both_zero"),
        ("candidate", 0, "multiple_fields_uniqueness"),  # two rows for candidate 0 of one pair
        ("image_path", "/abs/cand.png", "row 1, column 'image_path'.*relative_posix_png"),
        ("image_path", "u1/g5/cand_0.png", "column 'image_path'.*field_uniqueness"),
        ("mode", "lora", "row 1, column 'mode'"),
    ],
)
def test_candidates_schema_rejects_bad_rows(column: str, value, message: str) -> None:
    rows = _candidate_rows()
    validate(rows, Candidates, "candidates.parquet")
    rows.loc[1, column] = value
    with pytest.raises(DataError, match=message):
        validate(rows, Candidates, "candidates.parquet")


def test_candidates_schema_rejects_both_weights_zero() -> None:
    rows = _candidate_rows()
    rows.loc[2, ["w_p", "w_t"]] = 0.0
    with pytest.raises(DataError, match="weights_nonnegative_not_both_zero"):
        validate(rows, Candidates, "candidates.parquet")


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"weights": [[-1, 3]]}, "must be finite, >= 0 and not both 0"),
        ({"weights": [[0, 0]]}, "must be finite, >= 0 and not both 0"),
        ({"weights": [[1, 3], [2, 6]]}, "repeat a ratio"),
        ({"weights": []}, "at least one"),
        ({"repeats": [1, 1]}, "distinct counts"),
        ({"height": 30}, "multiple of 8"),
        ({"mode": "lora"}, "mode"),
    ],
)
def test_generate_config_rejects_bad_values(update: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerateConfig(**update)


def test_inference_uses_the_training_prompts_and_skips_users_without_history() -> None:
    from pmg.method.generate import keyword_text
    from pmg.method.soft import behaviour_prompt, behaviour_prompts, keyword_string

    def line(user, kind, position, text, scenario="emoji"):
        return {"user_id": user, "scenario": scenario, "kind": kind, "ref": str(position),
                "position": position, "line": text, "source": "text"}

    frame = pd.DataFrame([
        line("u1", "history", 1, "a sad face"),
        line("u1", "history", 0, "a smiling cat"),   # out of order on purpose
        line("u1", "conversation", 0, "I love cats"),
        line("u1", "target", 0, "a dog"),
        line("u2", "conversation", 0, "only talk"),   # no history: left out
        line("u3", "history", 0, "other scenario", scenario="movies"),
    ])
    prompts = behaviour_prompts("emoji", frame)
    assert prompts == {"u1": behaviour_prompt("emoji", ["a smiling cat", "a sad face"], ["I love cats"])}
    assert keyword_text([" red ", "", "wool"]) == keyword_string([" red ", "", "wool"]) == "red, wool"
