"""The soft model hands its prefix to the LLM through the cache API this transformers supports.

transformers 5.24 renamed the forward's `past_key_values` to `cache` (the old
name warns, and is removed in 5.40); 5.0-5.23 know only `past_key_values`. A
cache passed under a name the forward does not know would be swallowed by its
`**kwargs` and the prefix silently ignored, so the test checks both that no
FutureWarning is raised and that the prefix changes the output.
"""

from __future__ import annotations

import warnings

import torch

from pmg.method.soft import SoftPreferenceModel, behaviour_prompt
from pmg.models.llm import LocalLLM
from pmg.models.tiny import build_tiny_llama, tiny_llm_tokenizer

PROMPTS = [
    behaviour_prompt("clothing", ["a red wool coat"], []),
    behaviour_prompt("clothing", ["a blue linen shirt", "a green jacket"], ["warm please"]),
]


def test_prefix_reaches_the_llm_without_a_deprecation_warning() -> None:
    tokenizer = tiny_llm_tokenizer()
    llm = LocalLLM(build_tiny_llama(tokenizer, seed=0), tokenizer, model_id="tiny-llama-0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the past_key_values deprecation fails here
        model = SoftPreferenceModel(llm, 32, num_tokens=3, prefix_length=2, use_prefix=True)
        with torch.no_grad():
            before = model.embed(PROMPTS)
            model.prefix.add_(torch.randn_like(model.prefix))
            after = model.embed(PROMPTS)
    assert before.shape == after.shape == (2, 3, 32)
    assert (after - before).abs().max() > 1e-3  # the prefix is read by the LLM, not dropped
