"""The evaluation metrics: LPIPS (lower = more alike) and SSIM (higher = more alike).

The paper evaluates a generated image against the user's history images
(personalisation) and the target item's image (accuracy) with LPIPS and SSIM,
not with CLIP, which selected the candidates.

LPIPS comes from the `lpips` package. Its weights — the AlexNet or VGG16
trunk plus the learned linear heads — are read from local safetensors files
(`<spec.path>/alex.safetensors`, `<spec.path>/vgg.safetensors`, written by
the assets stage) whose keys are the `state_dict` of
`lpips.LPIPS(net=..., pretrained=False, pnet_rand=True)`. The network is built
with `pretrained=False, pnet_rand=True`, so neither `lpips` nor torchvision
downloads or unpickles anything (no `torch.load`); loading is strict.

SSIM is computed here in torch with the usual Wang et al. settings
(Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, on [0, 1] RGB), per
channel, averaged over channels and pixels to one value per image; it agrees
with `skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1)`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models.common import as_device, require

NETS = ("alex", "vgg")


def _build_lpips(net: str) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():
        # torchvision deprecates the `pretrained=` argument lpips passes it.
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)


def lpips_state_dict_groups(model: torch.nn.Module) -> list[list[str]]:
    """Group a model's state-dict keys that name the same tensor.

    `lpips.LPIPS` holds each linear head twice (`lin0` and `lins.0`), so its
    `state_dict` has both keys for one tensor; safetensors writers that
    de-duplicate shared tensors (`save_model`) keep only one of them.

    Returns:
        Lists of keys, one list per distinct tensor, in state-dict order.
    """
    groups: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)
    return list(groups.values())


def load_lpips(
    spec: ModelSpec,
    device: str | torch.device = "auto",
    *,
    net: str = "alex",
    key: str = "lpips",
) -> torch.nn.Module:
    """Build `lpips.LPIPS` and load its weights from `<spec.path>/<net>.safetensors`.

    Args:
        spec: `kind: lpips`, `path` the weights folder.
        device: `auto`, `cpu`, `cuda[:N]` or a `torch.device`.
        net: `alex` or `vgg`.
        key: the spec's config key, for messages.

    Returns:
        The LPIPS module in eval mode, frozen, on `device`, fp32.

    Raises:
        ModelError: the file is missing or unreadable, or its keys or shapes
            differ from the network's (missing and extra keys are listed).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if spec.kind != "lpips":
        raise ModelError(f"{key}.kind: unknown LPIPS kind {spec.kind!r}; use lpips")
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    folder = Path(require(spec, "path", key)).expanduser()
    file = folder / f"{net}.safetensors"
    if not file.is_file():
        raise ModelError(
            f"{key}.path = {spec.path!r}: no {file.name} in {folder.resolve()} (made by the assets stage)"
        )
    try:
        tensors = load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{key}.path: {file} is not a readable safetensors file: {err}") from None

    model = _build_lpips(net)
    groups = lpips_state_dict_groups(model)
    known = {name for group in groups for name in group}
    extra = sorted(set(tensors) - known)
    missing = [group[0] for group in groups if not any(name in tensors for name in group)]
    if missing or extra:
        raise ModelError(
            f"{key}.path: {file} does not hold LPIPS-{net} weights: "
            f"{len(missing)} missing key(s) {missing[:8]}, {len(extra)} unexpected key(s) {extra[:8]}"
        )
    full = {}
    expected = model.state_dict()
    for group in groups:
        value = next(tensors[name] for name in group if name in tensors)
        for name in group:
            if tuple(value.shape) != tuple(expected[name].shape):
                raise ModelError(
                    f"{key}.path: {file}: {name} has shape {tuple(value.shape)}, "
                    f"LPIPS-{net} expects {tuple(expected[name].shape)}"
                )
            full[name] = value
    model.load_state_dict(full, strict=True)
    model.requires_grad_(False)
    return model.to(as_device(device, key)).eval()


def _check_pair(images_a: torch.Tensor, images_b: torch.Tensor) -> None:
    if images_a.ndim != 4 or images_a.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images_a.shape)}")
    if images_a.shape != images_b.shape:
        raise ValueError(f"image batches differ in shape: {tuple(images_a.shape)} vs {tuple(images_b.shape)}")


@torch.inference_mode()
def lpips_distance(
    model: torch.nn.Module, images_a: torch.Tensor, images_b: torch.Tensor, *, batch_size: int = 16
) -> torch.Tensor:
    """LPIPS distance between paired images.

    Args:
        model: from :func:`load_lpips`.
        images_a: (N, 3, H, W) RGB in [0, 1].
        images_b: (N, 3, H, W) RGB in [0, 1].
        batch_size: pairs per forward pass.

    Returns:
        (N,) distances, float32, on CPU; 0 for identical images.
    """
    _check_pair(images_a, images_b)
    device = next(model.parameters()).device
    out = []
    for start in range(0, images_a.shape[0], batch_size):
        a = images_a[start : start + batch_size].to(device, torch.float32)
        b = images_b[start : start + batch_size].to(device, torch.float32)
        out.append(model(a, b, normalize=True).reshape(-1).cpu())  # (b,)
    return torch.cat(out) if out else torch.empty(0)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()  # (size,)


def ssim(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image pair.

    Local statistics use a Gaussian window over the "valid" region (no
    padding), population (not sample) covariances, and `C1 = (0.01 L)^2`,
    `C2 = (0.03 L)^2` with `L = data_range`; computed in float64.

    Args:
        images_a: (N, C, H, W) in [0, data_range]; H, W >= window_size.
        images_b: (N, C, H, W), same shape.
        data_range: L, the value range of the images.
        window_size: side of the Gaussian window (odd).
        sigma: its standard deviation.

    Returns:
        (N,) mean SSIM over channels and pixels, float32; 1 for identical images.
    """
    if images_a.ndim != 4 or images_a.shape != images_b.shape:
        shapes = f"{tuple(images_a.shape)} and {tuple(images_b.shape)}"
        raise ValueError(f"ssim needs two (N, C, H, W) batches of one shape, got {shapes}")
    n, channels, height, width = images_a.shape
    if min(height, width) < window_size:
        raise ValueError(
            f"images of {height}x{width} are smaller than the {window_size}x{window_size} SSIM window"
        )
    x = images_a.detach().to("cpu", torch.float64)
    y = images_b.detach().to("cpu", torch.float64)
    g = _gaussian_window(window_size, sigma, torch.float64)
    kernel_h = g.view(1, 1, 1, -1).expand(channels, 1, 1, window_size)
    kernel_v = g.view(1, 1, -1, 1).expand(channels, 1, window_size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H-w+1, W-w+1)
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_v, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.reshape(n, -1).mean(dim=1).float()


def images_to_tensor(images: list[Image.Image], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack PIL images into a batch for the metrics.

    Args:
        images: N images (converted to RGB).
        size: (width, height) to resize every image to (bicubic); None needs
            them all the same size already.

    Returns:
        (N, 3, H, W) float32 in [0, 1].
    """
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if size is not None and image.size != tuple(size):
            image = image.resize(tuple(size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images differ in size {sorted(shapes)}; pass size=(width, height)")
    if not arrays:
        return torch.empty(0, 3, 0, 0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
