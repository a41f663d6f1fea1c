"""Where models run and in which precision: the one rule every loader applies.

Profiles say `device: auto` and `dtype: auto`; :func:`resolve_device` and
:func:`resolve_dtype` turn that into a concrete `torch.device` and
`torch.dtype` once, so every loader (`load_llm`, `load_generator`,
`load_scorer`, `load_captioner`) makes the same choice:

* CPU: always float32. Half precision (fp16 or bf16) is never used on CPU —
  many CPU kernels lack it or run it slower than fp32 — so a profile written
  for a GPU (`dtype: float16`) still runs, in fp32, on a laptop.
* CUDA, `auto`: bfloat16 where the GPU has bf16 tensor cores (compute
  capability 8.0 and later: A100, H100, L4, RTX 30xx and later), else float16.
  bf16 keeps fp32's exponent range, so the backward pass of the soft
  preference model through the frozen LLM cannot overflow or underflow the way
  fp16 gradients can without loss scaling (the adapter itself stays fp32, see
  `pmg.method.soft`). Stable Diffusion 1.5, BLIP-2 and open_clip run in either.
* CUDA, an explicit `float16` / `bfloat16` / `float32`: as written (bf16 on a
  GPU without it fails loudly rather than silently turning into fp16).

Attention: transformers and diffusers use PyTorch's scaled-dot-product
attention (SDPA) by default (`config._attn_implementation == "sdpa"`, diffusers'
`AttnProcessor2_0`), which picks the flash / memory-efficient kernels on CUDA:
attention memory is linear in the sequence length, so attention slicing (which
trades speed for the quadratic memory of the eager kernel) is not switched on.

Training (adapters, the mini zoo) may opt into bf16 autocast (`bf16_autocast`):
it runs only where the device computes bf16 natively (x86 AVX512-BF16 or
AMX-BF16, Arm BF16, CUDA with bf16); elsewhere PyTorch emulates it, measured
at about 1/100 of the fp32 matmul rate on an AVX2-only EPYC, so it falls back
to fp32 there, with one log line saying so (`bf16_supported`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import re
from collections.abc import Callable

import torch

from pmg.errors import ModelError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device, *, key: str = "device") -> torch.device:
    """Turn a profile's device setting into a `torch.device`.

    Args:
        device: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or
            `cuda:N`; a `torch.device` passes through the same checks.
        key: the config key the value came from, for error messages.

    Raises:
        ModelError: the string is none of the above, or CUDA is asked for
            where there is none (or not that many devices).
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ModelError(f"{key}: unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ModelError(
            f"{key}: device {str(device)!r} asked for, but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use 'auto' or 'cpu'"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ModelError(f"{key}: device {str(device)!r} asked for, but only {count} CUDA device(s) exist")
    return torch.device("cuda", index)


def half_precision(device: torch.device) -> torch.dtype:
    """The half-precision dtype `auto` means on a CUDA device: bf16 where supported, else fp16."""
    if device.type != "cuda":
        raise ValueError(f"half precision is only used on CUDA, not on {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, _minor = torch.cuda.get_device_capability(index)
    return torch.bfloat16 if major >= 8 else torch.float16


def resolve_dtype(dtype: str, device: torch.device, *, key: str = "dtype") -> torch.dtype:
    """Turn a spec's dtype setting into a `torch.dtype` for `device` (the module's one rule).

    Args:
        dtype: `auto`, `float32`, `float16` or `bfloat16`.
        device: where the model will run.
        key: the config key the value came from, for messages.

    Returns:
        float32 on CPU whatever was asked (with a log line when half precision
        was asked); on CUDA, `auto` gives :func:`half_precision` and a named
        dtype is kept.

    Raises:
        ModelError: an unknown dtype name, or bfloat16 asked for on a CUDA
            device that does not support it.
    """
    if dtype != "auto" and dtype not in _DTYPES:
        raise ModelError(f"{key}: unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    if device.type != "cuda":
        if dtype in ("float16", "bfloat16"):
            log.info("%s: %s asked for on %s; using float32", key, dtype, device)
        return torch.float32
    if dtype == "auto":
        return half_precision(device)
    chosen = _DTYPES[dtype]
    if chosen == torch.bfloat16 and half_precision(device) != torch.bfloat16:
        raise ModelError(
            f"{key}: bfloat16 asked for, but {torch.cuda.get_device_name(device)} does not support it "
            f"(compute capability < 8.0); use auto or float16"
        )
    return chosen


_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16; Arm BF16).

    Read from the kernel's CPU flags (`/proc/cpuinfo`); where they cannot be
    read, from PyTorch's CPU capability (AMX implies bf16). Cached: the CPU
    does not change under a running process.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()
    return native_bf16_in_cpuinfo(text, platform.machine())


def native_bf16_in_cpuinfo(cpuinfo: str, machine: str) -> bool:
    """Whether a `/proc/cpuinfo` text lists a native bf16 instruction set.

    Args:
        cpuinfo: the file's text (x86 `flags`, Arm `Features` lines).
        machine: `platform.machine()` (`x86_64`, `aarch64`, ...).
    """
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    if machine.lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool(flags & _X86_BF16_FLAGS)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 runs at full speed on `device` (CUDA: `is_bf16_supported`; CPU: `cpu_has_native_bf16`)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


@functools.cache
def _say_no_bf16(key: str, device_type: str) -> None:
    """The one line a bf16 fallback prints, once per key and device type."""
    where = "this CPU computes bf16 only by emulation (no AVX512-BF16, AMX-BF16 or Arm BF16)"
    if device_type != "cpu":
        where = f"{device_type} has no bf16 support"
    log.warning("%s: bfloat16 asked for, but %s; using float32", key, where)


def bf16_or_fp32(device: torch.device, *, key: str) -> torch.dtype:
    """bf16 where `device` runs it natively, else fp32 (saying so once).

    For compute that would use bf16 autocast (adapter training, the mini
    zoo): on a CPU without bf16 it stays in fp32.
    """
    if bf16_supported(device):
        return torch.bfloat16
    _say_no_bf16(key, device.type)
    return torch.float32


def bf16_autocast(
    enabled: bool, device: torch.device, *, key: str
) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context training forwards run in.

    bf16 autocast on `device` where `enabled` asks for it and the device
    computes bf16 natively; plain fp32 otherwise (`bf16_or_fp32` says so
    once). Parameters, optimiser state and losses stay fp32 either way:
    autocast only lowers the matmuls and convolutions (and their backward).

    Args:
        enabled: the config's `bf16` switch.
        device: where the forward runs.
        key: the switch's config key, for the fallback line.
    """
    if enabled and bf16_or_fp32(device, key=key) == torch.bfloat16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
