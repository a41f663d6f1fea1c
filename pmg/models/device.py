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
"""

from __future__ import annotations

import logging
import re

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
