"""The CUDA paths: half precision by default (bf16 where supported), seeds independent of the device's RNG.
Runs only where CUDA exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pmg.config import ModelSpec
from pmg.models.device import half_precision
from pmg.models.generator import load_generator
from pmg.models.llm import load_llm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (marked gpu)"),
]


def test_generator_on_cuda_defaults_to_half_precision(tiny_sd_dir: Path) -> None:
    generator = load_generator(ModelSpec(kind="diffusers", path=str(tiny_sd_dir)), "auto")
    assert generator.device.type == "cuda" and generator.dtype == half_precision(generator.device)
    assert generator.dtype in (torch.float16, torch.bfloat16)


def test_generator_on_cuda_fp16_is_batch_independent(tiny_sd_dir: Path) -> None:
    generator = load_generator(ModelSpec(kind="diffusers", path=str(tiny_sd_dir), dtype="float16"), "auto")
    embeds = torch.randn(3, 24, 32, generator=torch.Generator().manual_seed(0))
    negative = generator.unconditional_embeds(3, 24)
    batch = generator.generate(embeds, negative, steps=2, guidance_scale=4.0, seeds=[1, 2, 3])
    alone = generator.generate(embeds[2:], negative[2:], steps=2, guidance_scale=4.0, seeds=[3])
    diff = np.abs(np.asarray(batch[2], dtype=np.int16) - np.asarray(alone[0], dtype=np.int16))
    assert diff.max() <= 2  # fp16 batched kernels may round differently


def test_llm_on_cuda_batch_equals_alone(tiny_llm_dir: Path) -> None:
    llm = load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir), dtype="float32"), "cuda")
    assert llm.device.type == "cuda"
    prompts = ["red dress", "a longer prompt about blue dotted shirts", "hi"]
    assert llm.generate(prompts, max_new_tokens=6) == [
        llm.generate([p], max_new_tokens=6)[0] for p in prompts
    ]
