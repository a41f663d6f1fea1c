"""This machine's limit, measured in the same run as the figure it is compared with.

Every speed benchmark prints its achieved GFLOP/s as a share of the fp32
and bf16 matmul rates measured here, in the same process, just before: a
shared 2-core machine's rate moves with the load, so a share measured
against an old figure would mean little. `uptime`'s load is printed beside.

The rate is the best of a few 2048^3 matmuls (`2 n^3` FLOPs each) after a
warm-up. Where the CPU has no native bf16 (see
`pmg.models.device.cpu_has_native_bf16`) PyTorch emulates it at a tiny
fraction of the fp32 rate; the bf16 figure is then measured at a smaller
size (`n = 512`) so it finishes, and says so.

FLOPs of a piece of work come from `torch.utils.flop_counter.FlopCounterMode`
(matmuls, convolutions and attention, forward and backward; element-wise
work is not counted), run once outside the timed runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pmg.models.device import cpu_has_native_bf16


@dataclass(frozen=True)
class Peak:
    """Matmul rates (GFLOP/s) of this machine, measured now."""

    fp32: float
    bf16: float
    bf16_native: bool
    threads: int
    load: float

    def share(self, gflops: float) -> str:
        """`gflops` as shares of the fp32 and bf16 rates, as printed."""
        return f"{gflops:.1f} GFLOP/s = {gflops / self.fp32:.0%} of fp32 peak, {gflops / self.bf16:.0%} of bf16 peak"

    def describe(self) -> str:
        native = "native" if self.bf16_native else "EMULATED (no AVX512-BF16/AMX on this CPU; n=512)"
        return (
            f"matmul peak now: fp32 {self.fp32:.0f} GFLOP/s, bf16 {self.bf16:.0f} GFLOP/s ({native}); "
            f"{self.threads} torch threads, {os.cpu_count()} cores, load average {self.load:.2f}"
        )


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best rate of `repeats` (n x n) @ (n x n) matmuls in `dtype`, after one warm-up."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def measure_peak(repeats: int = 5) -> Peak:
    """fp32 and bf16 matmul rates now (bf16 at n=512 where it is emulated)."""
    native = cpu_has_native_bf16()
    fp32 = matmul_gflops(torch.float32, 2048, repeats)
    bf16 = matmul_gflops(torch.bfloat16, 2048 if native else 512, repeats if native else 1)
    return Peak(fp32, bf16, native, torch.get_num_threads(), os.getloadavg()[0])


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs `fn` runs (matmuls, convolutions, attention), by `FlopCounterMode`."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
