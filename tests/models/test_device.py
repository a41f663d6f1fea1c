"""Device and dtype resolution: CUDA when present, fp16 only on CUDA."""

from __future__ import annotations

import pytest
import torch

from pmg.errors import ModelError
from pmg.models import device as device_module
from pmg.models.device import bf16_or_fp32, native_bf16_in_cpuinfo, resolve_device, resolve_dtype


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
        ("float32", "cuda", torch.float32),
    ],
)
def test_dtype_resolution(dtype: str, device: str, expected: torch.dtype) -> None:
    assert resolve_dtype(dtype, torch.device(device)) == expected


def test_unknown_dtype() -> None:
    with pytest.raises(ModelError, match=r"profiles\.mini\.llm\.dtype: unknown dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"), key="profiles.mini.llm.dtype")


AVX2_ONLY = "processor : 0\nflags : fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor : 0\nflags : fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert not native_bf16_in_cpuinfo(AVX2_ONLY, "x86_64")
    assert native_bf16_in_cpuinfo(AVX512_BF16, "x86_64")
    assert native_bf16_in_cpuinfo("flags : avx2 amx_bf16 amx_tile\n", "x86_64")
    assert native_bf16_in_cpuinfo("Features : fp asimd sve bf16 i8mm\n", "aarch64")
    assert not native_bf16_in_cpuinfo("Features : fp asimd\n", "aarch64")


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_bf16_on_cpu_only_where_it_is_native(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    device_module._say_no_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="pmg.models.device"):
        assert resolve_dtype("bfloat16", torch.device("cpu"), key="profiles.mini.llm.dtype") == expected
        assert resolve_dtype("bfloat16", torch.device("cpu"), key="profiles.mini.llm.dtype") == expected
        assert bf16_or_fp32(torch.device("cpu"), key="train_soft") == expected
    lines = [r.getMessage() for r in caplog.records]
    if native:
        assert lines == []
    else:  # one line per key, however often asked
        assert len(lines) == 2
        assert lines[0].startswith("profiles.mini.llm.dtype: bfloat16 asked for, but this CPU")
        assert lines[0].endswith("using float32")
