"""Loading the selected profile's models for the stages (one place, one key per model).

Every stage loads what it needs through these functions, so error messages
name the config key (`profiles.mini.llm`, ...) and the device rule is applied
the same way everywhere. Each function imports only its own model module,
so a stage depends (in `dvc.yaml`) on the model code it really runs.

Two LLM roles (`profiles.<p>.llm` and `profiles.<p>.soft_llm`): the LLM that
writes descriptions and keywords may be any kind, an endpoint included; the
base of the soft preference model runs here, so it must be a local kind.
`soft_llm: null` means "the same as `llm`", and then the already loaded LLM
is reused rather than loaded twice.

The answer cache (`pmg.method.llm_cache`) is wrapped around the LLM and the
captioner here too: the method code gets models, not cache folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pmg.config import DescribeConfig, KeywordsConfig, ModelSpec, Params
from pmg.errors import ConfigError

LOCAL_LLM_KINDS = ("hf", "gguf")
"""LLM kinds that run in this process (the soft preference model needs their hidden states)."""


def key(params: Params, part: str) -> str:
    """The dotted config key of one model of the selected profile."""
    return f"profiles.{params.base.profile}.{part}"


def llm(params: Params, *, batch_size: int = 8) -> Any:
    """The profile's LLM for descriptions and keywords (`profiles.<p>.llm`)."""
    from pmg.models.llm import load_llm

    return load_llm(
        params.profile.llm, params.profile.device, key=key(params, "llm"), seed=params.base.seed, batch_size=batch_size
    )


def soft_llm_spec(params: Params) -> tuple[ModelSpec, str]:
    """The base of the soft preference model and its config key (`soft_llm`, else `llm`).

    Raises:
        ConfigError: that LLM is not a local kind (an endpoint has no hidden
            states to train the adapter on), naming the key to set.
    """
    profile = params.profile
    spec, part = (profile.soft_llm, "soft_llm") if profile.soft_llm is not None else (profile.llm, "llm")
    if spec.kind not in LOCAL_LLM_KINDS:
        hint = (
            f"set {key(params, 'soft_llm')} to a local LLM (kind hf or gguf); {key(params, 'llm')} may stay an endpoint"
            if part == "llm"
            else "it must be a local LLM (kind hf or gguf)"
        )
        raise ConfigError(
            f"{key(params, part)} is kind {spec.kind!r}, but the soft preference model needs the hidden states "
            f"of a local LLM: {hint}"
        )
    return spec, key(params, part)


def soft_llm(params: Params, *, loaded: Any | None = None) -> Any:
    """The base LLM of the soft preference model.

    Args:
        params: all parameters.
        loaded: the already loaded `llm` of the profile, reused when the soft
            base is that same LLM (`soft_llm: null` or an identical spec).

    Raises:
        ConfigError: the soft base is not a local LLM (see `soft_llm_spec`).
    """
    from pmg.models.llm import load_llm

    spec, spec_key = soft_llm_spec(params)
    if loaded is not None and spec == params.profile.llm:
        return loaded
    return load_llm(spec, params.profile.device, key=spec_key, seed=params.base.seed)


def scorer(params: Params) -> Any:
    """The profile's image-text scorer (CLIP)."""
    from pmg.models.scorer import load_scorer

    return load_scorer(params.profile.scorer, params.profile.device, key=key(params, "scorer"))


def captioner(params: Params, *, shared_scorer: Any | None = None) -> Any:
    """The profile's captioner.

    A clip-retrieval captioner starts with a one-word vocabulary; the
    describe step gives it the scenario's vocabulary
    (`pmg.method.describe.with_vocabulary`).
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


def metric_models(params: Params, *, nets: tuple[str, ...] | None = None) -> Any:
    """The profile's LPIPS networks, one per trunk of `evaluate.nets` (a `MetricModels`)."""
    from pmg.evaluate.metrics import MetricModels
    from pmg.models.lpips_metric import load_lpips

    profile = params.profile
    return MetricModels(
        {
            net: load_lpips(profile.lpips, profile.device, net=net, key=key(params, "lpips"))
            for net in (nets or params.evaluate.nets)
        }
    )


def has_adapter(folder: str | Path) -> bool:
    """Whether `folder` holds a soft preference adapter (its `adapter_config.json`)."""
    from pmg.method.soft import CONFIG_FILE

    return (Path(folder) / CONFIG_FILE).is_file()


def soft_model(params: Params, folder: str | Path, *, generator: Any, base: Any | None = None) -> Any | None:
    """The soft preference model of an adapter folder, or None when the folder holds no adapter.

    Args:
        params: all parameters (the soft base LLM's spec).
        folder: an adapter folder (`pmg.method.soft.save_adapter`'s layout).
        generator: the loaded generator (its text width).
        base: the already loaded soft base LLM (`soft_llm`); loaded here
            (only when there is an adapter) when None.
    """
    from pmg.method.soft import SoftPreferenceModel

    if not has_adapter(folder):
        return None
    base = base if base is not None else soft_llm(params)
    return SoftPreferenceModel.load(Path(folder), base, text_width=generator.text_width)


# ------------------------------------------------------------------ caches


def cached_llm(params: Params, llm: Any, section: DescribeConfig | KeywordsConfig) -> Any:
    """`llm` wrapped in the answer cache of `section` (`describe` or `keywords`); None stays None.

    The cache identity is the profile's `llm` spec plus the weights'
    fingerprint and dtype (`pmg.method.llm_cache.model_id_of`).
    """
    from pmg.method.llm_cache import CachedLLM, ContentCache, model_id_of

    if llm is None or isinstance(llm, CachedLLM):
        return llm
    return CachedLLM(
        llm, model_id_of(params.profile.llm, llm), ContentCache(section.llm_cache), batch_size=section.batch_size
    )


def cached_captioner(params: Params, captioner: Any) -> Any:
    """`captioner` (its vocabulary already set) wrapped in the `describe` cache; None stays None."""
    from pmg.method.llm_cache import CachedCaptioner, ContentCache, captioner_id_of

    if captioner is None or isinstance(captioner, CachedCaptioner):
        return captioner
    return CachedCaptioner(
        captioner, captioner_id_of(params.profile.captioner, captioner), ContentCache(params.describe.llm_cache)
    )
