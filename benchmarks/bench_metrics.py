"""Benchmark: batched LPIPS (AlexNet) + SSIM vs a naive one-pair-at-a-time loop.

Both paths use the same libraries and the same loaded network
(`pmg.evaluate.metrics.batched_pair_metrics` vs `naive_pair_metrics`, which
calls `lpips.LPIPS(a, b)` and `ssim(a, b)` once per pair) on the same pairs.

Two workloads of `--pairs` (output, reference) pairs at `--size` px:

* `evaluation`: the shape of a real evaluation — each output meets its 5
  history images and its target, and catalogue images recur across users
  (drawn from the prepared clothing images when they exist, else synthetic);
  the batched path computes each distinct image's features once.
* `distinct`: every pair has two images of its own (no reuse at all), so
  only batching helps.

Timings are the best of `--repeat` runs (the minimum is the least disturbed
by other processes); the load average is printed beside them, since on a
shared machine absolute numbers move with it and the ratio less so.

    python benchmarks/bench_metrics.py --pairs 200 --size 64
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from pmg.config import ModelSpec
from pmg.evaluate.metrics import (
    MetricModels,
    batched_pair_metrics,
    load_image,
    naive_pair_metrics,
    ssim_pairs,
)
from pmg.models.lpips_metric import load_lpips, ssim

ROOT = Path(__file__).resolve().parents[1]


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    folder = ROOT / "data" / "prepared" / "clothing" / "images"
    files = sorted(folder.glob("*.png"))[:n] if folder.is_dir() else []
    if len(files) >= n:
        return torch.from_numpy(np.stack([load_image(f, size).pixels for f in files]))
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def workload(kind: str, pairs: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, pairs) of one workload (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "distinct":
        images = _images(2 * pairs, size, seed)
        index = torch.arange(2 * pairs).reshape(pairs, 2)
        return images, index
    users = -(-pairs // 6)
    catalogue = _images(max(60, users), size, seed)
    outputs = torch.rand(users, 3, size, size, generator=g)  # stand-ins for generated images
    images = torch.cat([outputs, catalogue])
    rows = []
    for u in range(users):
        refs = torch.randperm(len(catalogue), generator=g)[:6] + users
        rows += [(u, int(r)) for r in refs]
    return images, torch.tensor(rows[:pairs])


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_workload(
    kind: str,
    images: torch.Tensor,
    pairs: torch.Tensor,
    models: MetricModels,
    *,
    batch_size: int,
    repeat: int,
) -> None:
    """Time and print the four paths of one workload."""
    alex = models.lpips["alex"]
    n = pairs.shape[0]

    def batched() -> dict:
        return batched_pair_metrics(images, pairs, models, batch_size=batch_size)

    def naive() -> dict:
        return naive_pair_metrics(images, pairs, models)

    def naive_lpips() -> None:
        with torch.inference_mode():
            for i, j in pairs.tolist():
                alex(images[i : i + 1], images[j : j + 1], normalize=True)

    def naive_ssim() -> None:
        for i, j in pairs.tolist():
            ssim(images[i : i + 1], images[j : j + 1])

    def batched_lpips() -> None:
        batched_pair_metrics(images, pairs, models, batch_size=batch_size, with_ssim=False)

    def batched_ssim() -> None:
        ssim_pairs(images, pairs[:, 0], pairs[:, 1], batch_size=batch_size)

    a, b = batched(), naive()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    t_batched, t_naive = _best(batched, repeat), _best(naive, repeat)
    t_lpips_batched, t_naive_lpips = _best(batched_lpips, repeat), _best(naive_lpips, repeat)
    t_ssim_batched, t_naive_ssim = _best(batched_ssim, repeat), _best(naive_ssim, repeat)
    distinct = len(torch.unique(pairs))
    print(f"[{kind}] {n} pairs over {distinct} distinct images; max |batched - naive| = {worst:.2e}")
    for name, t_n, t_b in (
        ("LPIPS+SSIM", t_naive, t_batched),
        ("LPIPS only", t_naive_lpips, t_lpips_batched),
        ("SSIM only", t_naive_ssim, t_ssim_batched),
    ):
        print(
            f"  {name:<11} naive {n / t_n:8.1f} pairs/s   batched {n / t_b:8.1f} pairs/s   ratio {t_n / t_b:5.1f}x"
        )
    print(f"  load average now {os.getloadavg()}\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    parser.add_argument(
        "--lpips", default=str(ROOT / "data" / "assets" / "lpips"), help="LPIPS weights folder"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = MetricModels({"alex": load_lpips(ModelSpec(kind="lpips", path=args.lpips), "cpu", net="alex")})
    print(
        f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}"
    )
    print(
        f"{args.pairs} pairs at {args.size} px, LPIPS-Alex (real weights: {args.lpips}) + SSIM, best of {args.repeat}\n"
    )
    for kind in ("evaluation", "distinct"):
        images, pairs = workload(kind, args.pairs, args.size)
        run_workload(kind, images, pairs, models, batch_size=args.batch_size, repeat=args.repeat)


if __name__ == "__main__":
    main()
