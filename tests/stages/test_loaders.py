"""Two LLM roles: `llm` writes descriptions and keywords (any kind), `soft_llm` is the local soft base."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmg.config import load_params
from pmg.errors import ConfigError
from pmg.stages import loaders

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = {"kind": "openai", "url": "http://127.0.0.1:9", "name": "served-model", "context_length": 2048}


def _params(**profile):
    return load_params(ROOT / "params.yaml", {f"profiles.mini.{k}": v for k, v in profile.items()})


def test_the_soft_base_defaults_to_the_llm_and_reuses_it() -> None:
    params = _params()
    spec, key = loaders.soft_llm_spec(params)
    assert spec == params.profile.llm and key == "profiles.mini.llm"
    loaded = object()
    assert loaders.soft_llm(params, loaded=loaded) is loaded  # no second load of the same LLM


def test_an_endpoint_for_keywords_needs_a_local_soft_base_named_in_the_error() -> None:
    params = _params(llm=ENDPOINT)
    with pytest.raises(ConfigError) as err:
        loaders.soft_llm_spec(params)
    message = str(err.value)
    assert "profiles.mini.llm is kind 'openai'" in message and "set profiles.mini.soft_llm" in message
    with pytest.raises(ConfigError, match=r"profiles\.mini\.soft_llm is kind 'openai'"):
        loaders.soft_llm_spec(_params(soft_llm=ENDPOINT))


def test_an_endpoint_for_keywords_with_a_local_soft_base_is_a_params_edit(tmp_path: Path) -> None:
    """`llm` an endpoint, `soft_llm` a local folder: each role loads its own model."""
    from pmg.models.llm import EndpointLLM, LocalLLM
    from pmg.models.tiny import save_tiny_llm

    folder = save_tiny_llm(tmp_path / "llm", seed=0)
    params = _params(llm=ENDPOINT, soft_llm={"kind": "hf", "path": str(folder)}, device="cpu")
    spec, key = loaders.soft_llm_spec(params)
    assert key == "profiles.mini.soft_llm" and spec.path == str(folder)
    assert isinstance(loaders.llm(params), EndpointLLM)  # descriptions and keywords
    base = loaders.soft_llm(params, loaded=object())  # not the keywords' LLM: loaded from its own spec
    assert isinstance(base, LocalLLM)
