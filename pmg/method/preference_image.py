"""One preference-only image per user (PMG §4.6): the user's visual feature for recommendation.

The paper's RQ5 initialises a recommender's user visual feature with "the
image PMG generates under the preference condition, without a target item".
That is the generation of `pmg.method.generate` with the weight pair
`w_p : w_t = 1 : 0`: the condition is `E_p = concat(E_m, E_k)` alone (the
soft preference embeddings and the preference keywords, whichever the
`generate` section turns on), `E_t` is left out of the token sequence (never
zeroed; see `pmg.method.generate`), and there are no target keywords.

Everything else is the generation the PMG images use: the same generator,
steps, guidance and size (`generate`), the same soft preference model, the
same seed derivation (`candidate_seed` with the target `PREFERENCE_ONLY_TARGET`
and candidate 0), so the image is a pure function of the user's preference
condition and the models. `preference_image_key` is its content address: the
sha256 of everything that changes the pixels (model fingerprints, the
condition's text, the generation parameters and the seed), like the LLM
cache's keys, so a stage can keep the PNGs by key and regenerate only users
whose condition changed.

Users are skipped, with the reason, when there is no preference condition:
no behaviour prompt while the soft embeddings are on, or (keywords only) an
empty preference keyword list — the empty prompt would make an
unconditioned image, which is not the user's preference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
from PIL import Image

from pmg.config import GenerateConfig
from pmg.method.generate import GenerationRequest, candidate_seed, generate_candidates
from pmg.method.llm_cache import content_key

#: The `target_item` of a preference-only request (seeds derive from it; no item has this id).
PREFERENCE_ONLY_TARGET = "(preference only)"
#: Skip reasons.
NO_BEHAVIOUR = "no behaviour prompt (soft preference embeddings need one)"
NO_KEYWORDS = "no preference keywords (and no soft preference embeddings)"
NO_CONDITION = "neither soft embeddings nor keywords are on in generate"
KEY_VERSION = "1"


def preference_only_config(cfg: GenerateConfig) -> GenerateConfig:
    """The `generate` section with one candidate `w_p : w_t = 1 : 0` (and weighted embeddings).

    Keeps `use_soft`, `use_keywords`, `steps`, `guidance_scale`, `height`,
    `width`: the image is made like the PMG candidates, minus the target.
    """
    data = cfg.model_dump()
    data.update(mode="weighted_embeddings", weights=((1.0, 0.0),), shared_noise=False)
    return GenerateConfig.model_validate(data)


def preference_request(
    user_id: str, scenario: str, preference_keywords: tuple[str, ...], behaviour_prompt: str | None, cfg: GenerateConfig
) -> GenerationRequest:
    """The preference-only generation request of one user.

    Args:
        user_id: the user.
        scenario: the scenario.
        preference_keywords: `k_p`, in order.
        behaviour_prompt: the user's behaviour prompt (`behaviour_prompts`),
            needed when `cfg.use_soft`.
        cfg: the `generate` section (its `use_soft` / `use_keywords`).

    Raises:
        ValueError: the user has no preference condition; the message is one
            of `NO_BEHAVIOUR`, `NO_KEYWORDS`, `NO_CONDITION`.
    """
    if not (cfg.use_soft or cfg.use_keywords):
        raise ValueError(NO_CONDITION)
    if cfg.use_soft and not behaviour_prompt:
        raise ValueError(NO_BEHAVIOUR)
    if not cfg.use_soft and not any(k.strip() for k in preference_keywords):
        raise ValueError(NO_KEYWORDS)
    return GenerationRequest(
        user_id=str(user_id),
        scenario=str(scenario),
        target_item=PREFERENCE_ONLY_TARGET,
        preference_keywords=tuple(preference_keywords),
        target_keywords=(),
        behaviour_prompt=behaviour_prompt or None,
    )


def preference_requests(
    keywords: pd.DataFrame, behaviour: Mapping[str, str | None], cfg: GenerateConfig, users: list[str] | None = None
) -> tuple[list[GenerationRequest], dict[str, list[str]]]:
    """Preference-only requests from a `Keywords` table, and the users skipped by reason.

    Args:
        keywords: a validated `Keywords` table (one scenario).
        behaviour: user -> behaviour prompt.
        cfg: the `generate` section.
        users: only these users (in this order); default every row's user.
            A user without a keywords row is skipped (`no keywords row`).
    """
    rows = {str(r["user_id"]): r for r in keywords.to_dict("records")}
    order = list(rows) if users is None else [str(u) for u in users]
    requests: list[GenerationRequest] = []
    skipped: dict[str, list[str]] = {}
    for user in order:
        row = rows.get(user)
        if row is None:
            skipped.setdefault("no keywords row", []).append(user)
            continue
        try:
            requests.append(
                preference_request(
                    user, row["scenario"], tuple(json.loads(row["preference_keywords"])), behaviour.get(user), cfg
                )
            )
        except ValueError as err:
            skipped.setdefault(str(err), []).append(user)
    return requests, skipped


def preference_seed(request: GenerationRequest, seed: int) -> int:
    """The noise seed of a user's preference-only image (candidate 0 of the preference-only pair)."""
    return candidate_seed(seed, request.scenario, request.user_id, PREFERENCE_ONLY_TARGET, 0)


def preference_image_key(
    request: GenerationRequest, cfg: GenerateConfig, seed: int, *, generator_id: str, soft_model_id: str | None
) -> str:
    """The content address of a user's preference-only image.

    Everything that changes the pixels is in it, nothing else (no paths):
    the generator's and soft model's identities (content fingerprints, e.g.
    `pmg.method.llm_cache.model_id_of` of their specs plus the adapter's
    hash), which conditions are on and their text, the generation
    parameters, and the noise seed (which covers the user id).

    Args:
        request: from `preference_request`.
        cfg: the `generate` section (as configured; the key reads what
            `preference_only_config` keeps).
        seed: the base seed (`base.seed`).
        generator_id: the generator's identity.
        soft_model_id: the soft preference model's identity (None when
            `cfg.use_soft` is off; ignored then).
    """
    return content_key(
        {
            "kind": "preference_image",
            "version": KEY_VERSION,
            "generator": generator_id,
            "soft_model": soft_model_id if cfg.use_soft else None,
            "use_soft": cfg.use_soft,
            "use_keywords": cfg.use_keywords,
            "preference_text": request.preference_text if cfg.use_keywords else None,
            "behaviour_prompt": request.behaviour_prompt if cfg.use_soft else None,
            "steps": cfg.steps,
            "guidance_scale": cfg.guidance_scale,
            "height": cfg.height,
            "width": cfg.width,
            "seed": preference_seed(request, seed),
        }
    )


def generate_preference_image(
    request: GenerationRequest, *, generator: Any, soft_model: Any | None, cfg: GenerateConfig, seed: int
) -> Image.Image:
    """Generate the user's preference-only image (one generator call, one image).

    Args:
        request: from `preference_request`.
        generator: the loaded `ImageGenerator`.
        soft_model: the soft preference model (needed when `cfg.use_soft`).
        cfg: the `generate` section (made preference-only here).
        seed: the base seed (`base.seed`).
    """
    result = generate_candidates(
        request, generator=generator, soft_model=soft_model, cfg=preference_only_config(cfg), seed=seed
    )
    if len(result.images) != 1 or result.rows[0]["w_t"] != 0:
        raise RuntimeError(f"expected one preference-only image, got {[(r['w_p'], r['w_t']) for r in result.rows]}")
    return result.images[0]


__all__ = [
    "PREFERENCE_ONLY_TARGET",
    "generate_preference_image",
    "preference_image_key",
    "preference_only_config",
    "preference_request",
    "preference_requests",
    "preference_seed",
]
