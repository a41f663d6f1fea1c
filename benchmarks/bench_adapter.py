"""Benchmark: soft-preference adapter training steps/s, before and after issue 13, as a share of the limit.

Two short `train_soft` runs of one scenario on the same examples, in one
process, back to back:

* **before** — plain random batches (`bucket_batches: 1`), fp32: what
  training did before issue 13;
* **after** — `params.yaml`'s `train_soft` (length buckets; bf16 autocast
  when `bf16: true` and the CPU computes bf16 natively, else fp32 with one
  line saying so), or `--bf16` to ask for it here.

Printed: steps/s of each (the training loop only, validation excluded), the
speed-up, each run's validation losses (with `E_m`, zeroed, keywords only:
the "unchanged within noise" check), and achieved GFLOP/s as a share of the
fp32 and bf16 matmul rates measured in the same run (`benchmarks/machine.py`).
FLOPs per step are counted by `FlopCounterMode` on one step (LLM forward and
backward through the frozen model, UNet forward and backward) at the
examples' mean prompt length, unpadded: the useful work of a step, the same
for both runs.

Examples come from `describe.out` / `keywords.out` when those exist, else
are built from the prepared catalogue (history items' texts as lines, their
attribute values as keywords; it says so). The generator is the mini zoo's
SD, else a tiny random one (it says so).

    python benchmarks/bench_adapter.py [--scenario clothing] [--steps 20] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from machine import count_flops, measure_peak
from pmg import schemas
from pmg.config import load_params
from pmg.data.store import read_scenario
from pmg.io import read_table
from pmg.method.soft import SoftPreferenceModel, behaviour_prompt
from pmg.method.train_soft import (
    SoftExample,
    _denoising_loss,
    _noise_scheduler,
    build_examples,
    train_soft,
)
from pmg.models.generator import ImageGenerator, load_generator
from pmg.models.llm import load_llm
from pmg.models.tiny import build_tiny_sd_pipeline


def examples_of(params, scenario: str) -> tuple[list[SoftExample], str]:
    prepared = read_scenario(Path(params.prepare.out) / scenario)
    described = Path(params.describe.out) / f"{scenario}.parquet"
    found = Path(params.keywords.out) / f"{scenario}.parquet"
    if described.is_file() and found.is_file():
        descriptions = read_table(described, schemas.Descriptions)
        keywords = read_table(found, schemas.Keywords)
        return build_examples(prepared, descriptions, keywords), "describe + keywords tables"
    items = prepared.items.set_index("item_id")
    examples = []
    for row in prepared.splits.head(params.describe.max_users or len(prepared.splits)).itertuples():
        history = [str(items.loc[i, "text"])[:240] for i in json.loads(row.history_items)]
        values = json.loads(items.loc[json.loads(row.history_items)[-1], "attributes"])
        image = prepared.image_file(str(row.supervision_item))
        if image is None:
            continue
        words = ", ".join(str(v) for v in values.values() if isinstance(v, str))
        examples.append(SoftExample(str(row.user_id), behaviour_prompt(scenario, history, []), words, image))
    return examples, "BUILT FROM THE CATALOGUE (no describe/keywords tables)"


def step_flops(model: SoftPreferenceModel, generator, examples: list[SoftExample], batch: int) -> int:
    """FLOPs of one training step at the mean prompt length, unpadded (`FlopCounterMode`)."""
    lengths = [len(model.token_ids(e.prompt)) for e in examples]
    mean = round(statistics.mean(lengths))
    ids = torch.full((batch, mean), 1, dtype=torch.long)
    mask = torch.ones_like(ids)
    keywords = generator.encode_text([examples[0].preference_keywords] * batch).float()
    side = generator.default_size[0] // generator.pipeline.vae_scale_factor
    latents = torch.randn(batch, generator.pipeline.unet.config.in_channels, side, side)
    scheduler = _noise_scheduler(generator)

    def step() -> None:
        soft = model(ids, mask)
        loss = _denoising_loss(
            generator, scheduler, latents, torch.randn_like(latents), torch.full((batch,), 500),
            torch.cat([soft.float(), keywords], dim=1),
        ).mean()  # fmt: skip
        loss.backward()

    return count_flops(step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scenario", default="clothing")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--bf16", action="store_true", help="ask for bf16 autocast in the 'after' run")
    args = parser.parse_args()
    params = load_params(args.params)
    peak = measure_peak()
    print(peak.describe())
    examples, source = examples_of(params, args.scenario)
    llm = load_llm(params.profile.llm, "cpu", seed=params.base.seed)
    sd = Path(params.profile.generator.path or "")
    if (sd / "model_index.json").is_file():
        generator, what = load_generator(params.profile.generator, "cpu"), f"mini zoo SD at {sd}"
    else:
        generator, what = ImageGenerator(build_tiny_sd_pipeline(seed=0)), "TINY RANDOM SD (no zoo SD)"
    print(f"{args.scenario}: {len(examples)} examples ({source}); generator: {what}; LLM in {llm.dtype}")
    base = params.train_soft
    runs = {
        "before": base.model_copy(update={"steps": args.steps, "bucket_batches": 1, "bf16": False}),
        "after": base.model_copy(update={"steps": args.steps, "bf16": base.bf16 or args.bf16}),
    }
    model = SoftPreferenceModel(llm, generator.text_width, num_tokens=base.num_tokens,
                                prefix_length=base.prefix_length, max_prompt_tokens=base.max_prompt_tokens)  # fmt: skip
    flops = step_flops(model, generator, examples, base.batch_size)
    print(f"useful FLOPs per step (batch {base.batch_size}, mean prompt length, unpadded): {flops / 1e9:.1f} GFLOP")
    results = {}
    for name, cfg in runs.items():
        _, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=params.base.seed, log=lambda _: None)
        results[name] = result.metrics
        m = result.metrics
        print(
            f"  {name:<6} bucket_batches={cfg.bucket_batches} bf16={cfg.bf16}: {m['steps_per_second']:.3f} steps/s, "
            f"{peak.share(flops * m['steps_per_second'] / 1e9)}; val loss {m['val_loss']:.5f} "
            f"(initial {m['val_loss_initial']:.5f}, E_m zeroed {m['val_loss_zeroed']:.5f}, "
            f"keywords only {m['val_loss_keywords_only']:.5f}); train loss last {m['train_loss_last']:.5f}"
        )
    speedup = results["after"]["steps_per_second"] / results["before"]["steps_per_second"]
    print(f"speed-up per step: {speedup:.2f}x (target >= 3x); load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
