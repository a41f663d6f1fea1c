"""The loaders on the real offline assets (after the assets stage has run): LPIPS weights, SmolLM2 GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pmg.config import ModelSpec
from pmg.models.llm import convert_gguf_to_hf, load_llm
from pmg.models.lpips_metric import load_lpips, lpips_distance

SMOLLM = Path("smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_real_lpips_weights_rank_a_small_change_below_a_large_one(net: str, packaged_model_assets: Path) -> None:
    model = load_lpips(ModelSpec(kind="lpips", path=str(packaged_model_assets / "lpips")), "cpu", net=net)
    # Smooth images (a colour gradient), as the metric was calibrated on natural images.
    ramp = torch.linspace(0, 1, 64)
    x = torch.stack(
        [
            ramp.view(1, -1).expand(64, 64),
            ramp.view(-1, 1).expand(64, 64),
            1 - ramp.view(1, -1).expand(64, 64),
        ]
    )
    x = x.unsqueeze(0)  # (1, 3, 64, 64)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    small, large = (x + 0.03 * (noise - 0.5)).clamp(0, 1), (x + 0.6 * (noise - 0.5)).clamp(0, 1)
    assert lpips_distance(model, x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < lpips_distance(model, x, small).item() < lpips_distance(model, x, large).item()


def test_smollm2_gguf_converts_and_answers(tmp_path: Path, packaged_model_assets: Path) -> None:
    folder = convert_gguf_to_hf(packaged_model_assets / SMOLLM, tmp_path / "smollm2")
    llm = load_llm(ModelSpec(kind="hf", path=str(folder)), "cpu", key="profiles.mini.llm")
    assert llm.context_length == 8192
    assert llm.tokenizer.chat_template and "<|im_start|>" in llm.format_prompt("hi")
    prompts = ["List 5 colour keywords for: red striped dress, blue dotted shirt", "Name one colour."]
    answers = llm.generate(prompts, max_new_tokens=24)
    assert all(answers) and answers[0] == llm.generate(prompts[:1], max_new_tokens=24)[0]
    assert any(word in answers[0].lower() for word in ("red", "blue", "colour", "color"))
