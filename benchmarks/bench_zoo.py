"""Benchmark: time and peak memory of each mini-zoo build stage.

Runs `pmg zoo llm`, `pmg zoo clip` and `pmg zoo sd` as child processes into a
scratch folder (the project's own `data/zoo` is not touched), measures each
child's wall time and peak resident memory (`os.wait4` rusage), and prints
them with the budget: the whole zoo in at most 25 minutes and 8 GiB peak on
2 CPU cores. Needs `data/assets` and `data/prepared` (run `dvc repro prepare`).

`--rates` measures instead the training step rate of the two trained zoo
models as a share of this machine's limit: a UNet + text-encoder step of the
mini SD (`zoo.sd` architecture and batch size, random latents and captions)
and an image-tower step of the mini CLIP (`zoo.clip` tower, batch and image
size), each with `zoo.<part>.bf16` as configured, timed over a few steps
after a warm-up; FLOPs of one step (forward and backward) are counted by
`FlopCounterMode`, and the achieved GFLOP/s is printed against the fp32 and
bf16 matmul rates measured in the same run (`benchmarks/machine.py`).

    python benchmarks/bench_zoo.py [--parts llm clip sd] [--keep]
    python benchmarks/bench_zoo.py --rates [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 25 * 60
BUDGET_MIB = 8 * 1024


def run_child(argv: list[str]) -> tuple[int, float, float]:
    """Run `argv`; return (exit status, wall seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 1024


def step_rates(steps: int) -> None:
    """Training step rates of the mini SD and the mini CLIP image tower, as shares of the peak."""
    import torch
    import torch.nn.functional as F

    from machine import count_flops, measure_peak
    from pmg.config import load_params
    from pmg.models.device import bf16_autocast
    from pmg.zoo import sd

    params = load_params("params.yaml")
    peak = measure_peak()
    print(peak.describe())
    cfg = params.zoo.sd
    cpu = torch.device("cpu")
    tokenizer = sd.build_tokenizer(cfg)
    text_encoder = sd.build_text_encoder(cfg, tokenizer, seed=0)
    unet = sd.build_unet(cfg, seed=0).to(memory_format=torch.channels_last)
    side = sd.latent_side(cfg)
    latents = torch.randn(cfg.batch_size, cfg.latent_channels, side, side).contiguous(memory_format=torch.channels_last)
    ids = torch.randint(0, len(tokenizer), (cfg.batch_size, cfg.max_length))
    timesteps = torch.randint(0, 1000, (cfg.batch_size,))
    trained = [*unet.parameters(), *text_encoder.parameters()]
    optimiser = torch.optim.AdamW(trained, lr=1e-4, fused=True)
    precision = bf16_autocast(cfg.bf16, cpu, key="zoo.sd.bf16")

    def sd_step() -> None:
        with precision():
            states = text_encoder(ids).last_hidden_state
            prediction = unet(latents, timesteps, states).sample
        loss = F.mse_loss(prediction.float(), latents)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    clip_cfg = params.zoo.clip
    import timm

    tower = timm.create_model(clip_cfg.image_tower, num_classes=clip_cfg.embed_dim)
    images = torch.randn(clip_cfg.batch_size, 3, clip_cfg.image_size, clip_cfg.image_size)
    clip_optimiser = torch.optim.AdamW(tower.parameters(), lr=1e-4)
    clip_precision = bf16_autocast(clip_cfg.bf16, cpu, key="zoo.clip.bf16")

    def clip_step() -> None:
        with clip_precision():
            features = tower(images)
        loss = features.float().pow(2).mean()
        clip_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        clip_optimiser.step()

    for name, step, batch in (("zoo sd (UNet + text encoder)", sd_step, cfg.batch_size),
                              ("zoo clip (image tower)", clip_step, clip_cfg.batch_size)):  # fmt: skip
        flops = count_flops(step)
        step()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = (time.perf_counter() - started) / steps
        print(f"{name}: {1 / seconds:.2f} steps/s at batch {batch}, {flops / 1e9:.1f} GFLOP per step: "
              f"{peak.share(flops / seconds / 1e9)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["llm", "clip", "sd"], choices=["llm", "clip", "sd"])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--rates", action="store_true", help="step rates as shares of the peak, no builds")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model with --rates")
    args = parser.parse_args()
    if args.rates:
        step_rates(args.steps)
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="pmg-bench-zoo-"))
    overrides = [
        "--set", f"zoo.llm_out={scratch / 'llm'}",
        "--set", f"zoo.clip.out={scratch / 'clip'}",
        "--set", f"zoo.sd.out={scratch / 'sd'}",
    ]
    pmg = [sys.executable, "-m", "pmg.cli", *overrides]
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    total_wall, peak = 0.0, 0.0
    rows = []
    for part in args.parts:
        status, wall, rss = run_child([*pmg, "--metrics-root", str(scratch / "metrics"), "zoo", part])
        total_wall += wall
        peak = max(peak, rss)
        rows.append((part, status, wall, rss))
        if status != 0:
            print(f"zoo {part} exited with {status}")
            break
    print(f"\n{'stage':<8}{'status':>8}{'wall s':>10}{'peak MiB':>11}")
    for part, status, wall, rss in rows:
        print(f"{part:<8}{status:>8}{wall:>10.1f}{rss:>11.0f}")
    print(f"{'total':<8}{'':>8}{total_wall:>10.1f}{peak:>11.0f}")
    print(f"time: {total_wall / 60:.1f} min of {BUDGET_SECONDS / 60:.0f} ({total_wall / BUDGET_SECONDS:.2f}x budget)")
    print(f"peak memory: {peak:.0f} MiB of {BUDGET_MIB} ({peak / BUDGET_MIB:.2f}x budget)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r[1] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
