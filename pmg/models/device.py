"""Where models run and in which precision.

Profiles say `device: auto` and `dtype: auto`; these two functions turn that
into a concrete `torch.device` and `torch.dtype` once, so every loader makes
the same choice: CUDA when present, fp16 on CUDA, fp32 on CPU. fp16 is never
used on CPU — many CPU kernels lack it or run it slower than fp32 — so a
profile written for a GPU (`dtype: float16`) still runs, in fp32, on a laptop.
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


def resolve_dtype(dtype: str, device: torch.device, *, key: str = "dtype") -> torch.dtype:
    """Turn a spec's dtype setting into a `torch.dtype` for `device`.

    Args:
        dtype: `auto`, `float32`, `float16` or `bfloat16`.
        device: where the model will run.
        key: the config key the value came from, for messages.

    Returns:
        fp16 for `auto` on CUDA, fp32 for `auto` on CPU; the named dtype
        otherwise, except that fp16 on CPU becomes fp32 (with a log line).

    Raises:
        ModelError: an unknown dtype name.
    """
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelError(f"{key}: unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    chosen = _DTYPES[dtype]
    if chosen == torch.float16 and device.type == "cpu":
        log.info("%s: float16 asked for on CPU; using float32", key)
        return torch.float32
    return chosen
