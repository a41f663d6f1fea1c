"""Device and dtype resolution: CUDA when present, half precision (bf16 where supported) only on CUDA."""

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


@pytest.fixture
def gpu_capability(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CUDA device has a given compute capability (no GPU needed)."""

    def set_capability(major: int) -> None:
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (major, 0))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"sm{major}0 GPU")

    return set_capability


@pytest.mark.parametrize(
    ("dtype", "device", "major", "expected"),
    [
        ("auto", "cpu", 9, torch.float32),
        ("float16", "cpu", 9, torch.float32),  # never half precision on CPU
        ("bfloat16", "cpu", 9, torch.float32),
        ("auto", "cuda", 9, torch.bfloat16),  # H100 / H200
        ("auto", "cuda", 8, torch.bfloat16),  # A100
        ("auto", "cuda", 7, torch.float16),  # V100, T4: no bf16
        ("float16", "cuda", 9, torch.float16),
        ("bfloat16", "cuda", 8, torch.bfloat16),
        ("float32", "cuda", 9, torch.float32),
    ],
)
def test_dtype_rule(dtype: str, device: str, major: int, expected: torch.dtype, gpu_capability) -> None:
    gpu_capability(major)
    assert resolve_dtype(dtype, torch.device(device)) == expected


def test_bf16_on_a_gpu_without_it_is_an_error(gpu_capability) -> None:
    gpu_capability(7)
    with pytest.raises(ModelError, match=r"profiles\.full\.llm\.dtype: bfloat16 asked for, but sm70 GPU does not"):
        resolve_dtype("bfloat16", torch.device("cuda"), key="profiles.full.llm.dtype")


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
def test_bf16_training_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native: bool, expected: torch.dtype
) -> None:
    """Training's bf16 autocast follows the CPU; model loading on CPU stays fp32 either way."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    device_module._say_no_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="pmg.models.device"):
        assert bf16_or_fp32(torch.device("cpu"), key="train_soft") == expected
        assert bf16_or_fp32(torch.device("cpu"), key="train_soft") == expected
        assert resolve_dtype("bfloat16", torch.device("cpu"), key="profiles.mini.llm.dtype") == torch.float32
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if native:
        assert lines == []
    else:  # one line per key, however often asked
        assert len(lines) == 1
        assert lines[0].startswith("train_soft: bfloat16 asked for, but this CPU")
        assert lines[0].endswith("using float32")
