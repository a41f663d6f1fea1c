"""Loading the selected profile's models for the stages (one place, one key per model).

Every stage loads what it needs through these functions, so error messages
name the config key (`profiles.mini.llm`, ...) and the device rule is applied
the same way everywhere.
"""

from __future__ import annotations

from typing import Any

from pmg.config import Params


def key(params: Params, part: str) -> str:
    """The dotted config key of one model of the selected profile."""
    return f"profiles.{params.base.profile}.{part}"


def llm(params: Params, *, batch_size: int = 8) -> Any:
    """The profile's LLM (summaries, keywords, base of the soft preference model)."""
    from pmg.models.llm import load_llm

    return load_llm(
        params.profile.llm, params.profile.device, key=key(params, "llm"), seed=params.base.seed, batch_size=batch_size
    )


def scorer(params: Params) -> Any:
    """The profile's image-text scorer (CLIP)."""
    from pmg.models.scorer import load_scorer

    return load_scorer(params.profile.scorer, params.profile.device, key=key(params, "scorer"))


def captioner(params: Params, *, shared_scorer: Any | None = None) -> Any:
    """The profile's captioner.

    A clip-retrieval captioner starts with a one-word vocabulary; the
    describe step gives it the scenario's vocabulary (`with_vocabulary`).
    """
    from pmg.models.captioner import load_captioner

    spec = params.profile.captioner
    if spec.kind == "clip-retrieval":
        return load_captioner(
            spec, params.profile.device, key=key(params, "captioner"), vocabulary=["item"], scorer=shared_scorer
        )
    return load_captioner(spec, params.profile.device, key=key(params, "captioner"))


def generator(params: Params) -> Any:
    """The profile's text-to-image generator."""
    from pmg.models.generator import load_generator

    return load_generator(params.profile.generator, params.profile.device, key=key(params, "generator"))
