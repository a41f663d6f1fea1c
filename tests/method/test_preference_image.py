"""Preference-only images (PMG §4.6): w_t = 0, no target, one image per user, a content key."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pmg.config import GenerateConfig
from pmg.method.generate import build_conditions, candidate_seed
from pmg.method.preference_image import (
    NO_BEHAVIOUR,
    NO_KEYWORDS,
    PREFERENCE_ONLY_TARGET,
    generate_preference_image,
    preference_image_key,
    preference_only_config,
    preference_request,
    preference_requests,
)
from pmg.models.generator import ImageGenerator
from pmg.models.tiny import build_tiny_llama, build_tiny_sd_pipeline, tiny_llm_tokenizer

L, D, SIZE = 4, 32, 16
CFG = GenerateConfig(steps=2, guidance_scale=5.0, height=SIZE, width=SIZE)
PROMPT = "The user liked these movies:\n- Alien (1979)\nDescribe the user's visual preference:"


@pytest.fixture(scope="module")
def generator() -> ImageGenerator:
    return ImageGenerator(build_tiny_sd_pipeline(seed=0))


@pytest.fixture(scope="module")
def soft_model():
    from pmg.method.soft import SoftPreferenceModel
    from pmg.models.llm import LocalLLM

    tokenizer = tiny_llm_tokenizer()
    llm = LocalLLM(build_tiny_llama(tokenizer, seed=0), tokenizer, model_id="tiny")
    return SoftPreferenceModel(llm, D, num_tokens=L, prefix_length=4, seed=0).eval()


def _request(keywords=("horror", "dark", "space"), prompt=PROMPT, cfg=CFG):
    return preference_request("u7", "movies", tuple(keywords), prompt, cfg)


def test_the_config_keeps_the_generation_but_drops_the_target() -> None:
    cfg = preference_only_config(CFG.model_copy(update={"mode": "repeat_keywords", "shared_noise": True}))
    assert cfg.mode == "weighted_embeddings" and cfg.weights == ((1.0, 0.0),)
    assert (cfg.steps, cfg.guidance_scale, cfg.height, cfg.use_soft, cfg.use_keywords) == (2, 5.0, SIZE, True, True)


def test_the_condition_is_the_preference_alone(generator, soft_model) -> None:
    request = _request()
    assert request.target_keywords == () and request.target_item == PREFERENCE_ONLY_TARGET
    prompt_embeds, negative, plan = build_conditions(
        request, generator=generator, soft_model=soft_model, cfg=preference_only_config(CFG), seed=3
    )
    assert [(c.w_p, c.w_t) for c in plan] == [(1.0, 0.0)]
    assert plan[0].seed == candidate_seed(3, "movies", "u7", PREFERENCE_ONLY_TARGET, 0)
    # E_p = concat(E_m, E_k), nothing else: no E_t tokens, no padding.
    keywords = generator.encode_text([request.preference_text])[0]
    soft = soft_model.soft_preference_embeddings([PROMPT])[0]
    assert prompt_embeds.shape == negative.shape == (1, L + 77, D)
    torch.testing.assert_close(prompt_embeds[0], torch.cat([soft, keywords]))


def test_a_target_is_still_required_where_a_candidate_uses_it(generator, soft_model) -> None:
    with pytest.raises(ValueError, match="no target keywords"):
        build_conditions(_request(), generator=generator, soft_model=soft_model, cfg=CFG, seed=0)


def test_one_reproducible_image_that_follows_the_preference(generator, soft_model) -> None:
    first = generate_preference_image(_request(), generator=generator, soft_model=soft_model, cfg=CFG, seed=0)
    again = generate_preference_image(_request(), generator=generator, soft_model=soft_model, cfg=CFG, seed=0)
    other = generate_preference_image(
        _request(keywords=("comedy", "sunny", "beach")), generator=generator, soft_model=soft_model, cfg=CFG, seed=0
    )
    pixels = [np.asarray(im, dtype=np.int16) for im in (first, again, other)]
    assert first.size == (SIZE, SIZE) and first.mode == "RGB"
    assert np.array_equal(pixels[0], pixels[1])
    assert np.abs(pixels[0] - pixels[2]).max() > 0  # same seed, other keywords: another image


def test_the_content_key_changes_with_what_changes_the_pixels() -> None:
    def key(request=None, cfg=CFG, seed=0, generator_id="sd@1", soft_model_id="soft@1"):
        return preference_image_key(
            request or _request(), cfg, seed, generator_id=generator_id, soft_model_id=soft_model_id
        )

    base = key()
    assert base == key() and len(base) == 64
    assert key(request=_request(keywords=("comedy",))) != base
    assert key(request=_request(prompt=PROMPT + " ")) != base
    assert key(request=preference_request("u8", "movies", ("horror", "dark", "space"), PROMPT, CFG)) != base
    assert key(seed=1) != base
    assert key(cfg=CFG.model_copy(update={"steps": 3})) != base
    assert key(generator_id="sd@2") != base
    assert key(soft_model_id="soft@2") != base
    # What does not reach the image does not move the key: the behaviour prompt and soft model without use_soft.
    keywords_only = CFG.model_copy(update={"use_soft": False})
    assert key(cfg=keywords_only, soft_model_id="a") == key(cfg=keywords_only, soft_model_id="b")
    assert key(request=_request(prompt="x", cfg=keywords_only), cfg=keywords_only) == key(cfg=keywords_only)
    # ... nor the target weights of the configured candidates.
    assert key(cfg=CFG.model_copy(update={"weights": ((0, 1), (1, 0))})) == base


def test_users_without_a_preference_condition_are_skipped_with_the_reason() -> None:
    keywords = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "scenario": ["movies"] * 3,
            "preference_keywords": [json.dumps(["horror"]), json.dumps([]), json.dumps(["drama"])],
        }
    )
    behaviour = {"u1": PROMPT, "u2": PROMPT, "u3": None}
    requests, skipped = preference_requests(keywords, behaviour, CFG, users=["u1", "u2", "u3", "u9"])
    assert [r.user_id for r in requests] == ["u1", "u2"]  # soft embeddings carry u2's preference
    assert skipped == {NO_BEHAVIOUR: ["u3"], "no keywords row": ["u9"]}
    keywords_only = CFG.model_copy(update={"use_soft": False})
    requests, skipped = preference_requests(keywords, behaviour, keywords_only)
    assert [r.user_id for r in requests] == ["u1", "u3"]
    assert skipped == {NO_KEYWORDS: ["u2"]}
