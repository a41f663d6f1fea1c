"""Device and dtype resolution: CUDA when present, fp16 only on CUDA."""

from __future__ import annotations

import pytest
import torch

from pmg.errors import ModelError
from pmg.models.device import resolve_device, resolve_dtype


def test_auto_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_without_cuda_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"profiles\.full\.device: device 'cuda' .* CUDA is not available"):
        resolve_device("cuda", key="profiles.full.device")


def test_cuda_index_beyond_device_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ModelError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_strings(bad: str) -> None:
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device(bad, key="profiles.mini.device")


def test_cpu_is_always_available() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        ("auto", "cpu", torch.float32),
        ("auto", "cuda", torch.float16),
        ("float16", "cpu", torch.float32),  # never fp16 on CPU
        ("float16", "cuda", torch.float16),
        ("bfloat16", "cpu", torch.bfloat16),
        ("float32", "cuda", torch.float32),
    ],
)
def test_dtype_resolution(dtype: str, device: str, expected: torch.dtype) -> None:
    assert resolve_dtype(dtype, torch.device(device)) == expected


def test_unknown_dtype() -> None:
    with pytest.raises(ModelError, match=r"profiles\.mini\.llm\.dtype: unknown dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"), key="profiles.mini.llm.dtype")
