"""LPIPS from local safetensors (strict, no download, no pickle) and SSIM against scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file, save_model
from skimage.metrics import structural_similarity

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models import tiny
from pmg.models.lpips_metric import _build_lpips, images_to_tensor, load_lpips, lpips_distance, ssim

KEY = "profiles.mini.lpips"


@pytest.fixture(scope="module")
def lpips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_random_lpips(tmp_path_factory.mktemp("lpips"), ("alex",), seed=3)


def _spec(folder: Path) -> ModelSpec:
    return ModelSpec(kind="lpips", path=str(folder))


def _batch(n: int, seed: int, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_loads_the_files_weights_frozen_in_eval_mode(
    lpips_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pickles(*args, **kwargs):
        raise AssertionError("torch.load must not be called")

    monkeypatch.setattr(torch, "load", no_pickles)
    model = load_lpips(_spec(lpips_dir), "cpu", net="alex", key=KEY)
    saved = load_file(lpips_dir / "alex.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_distance_is_zero_for_equal_images_and_grows_with_difference(lpips_dir: Path) -> None:
    model = load_lpips(_spec(lpips_dir), "cpu", key=KEY)
    x = _batch(3, 0)
    assert torch.allclose(lpips_distance(model, x, x), torch.zeros(3), atol=1e-7)
    slightly = (x + 0.02 * _batch(3, 1)).clamp(0, 1)
    very = _batch(3, 2)
    near, far = lpips_distance(model, x, slightly), lpips_distance(model, x, very)
    assert near.shape == far.shape == (3,)
    assert (far > near).all() and (near > 0).all()
    # Batching does not change the values.
    assert torch.allclose(lpips_distance(model, x, very, batch_size=1), far, atol=1e-6)


def test_deduplicated_files_load_too(lpips_dir: Path, tmp_path: Path) -> None:
    # safetensors' save_model keeps one name per shared tensor (`lin0` or `lins.0`).
    torch.manual_seed(3)
    source = _build_lpips("alex")
    save_model(source, str(tmp_path / "alex.safetensors"))
    assert len(load_file(tmp_path / "alex.safetensors")) < len(source.state_dict())
    model = load_lpips(_spec(tmp_path), "cpu", key=KEY)
    x, y = _batch(2, 0), _batch(2, 1)
    assert torch.allclose(
        lpips_distance(model, x, y), lpips_distance(load_lpips(_spec(lpips_dir), "cpu"), x, y)
    )


def _rewrite(lpips_dir: Path, tmp_path: Path, change) -> Path:
    tensors = load_file(lpips_dir / "alex.safetensors")
    change(tensors)
    save_file(tensors, str(tmp_path / "alex.safetensors"))
    return tmp_path


def test_missing_key_is_refused(lpips_dir: Path, tmp_path: Path) -> None:
    def drop(t: dict) -> None:
        del t["net.slice3.6.weight"]

    folder = _rewrite(lpips_dir, tmp_path, drop)
    with pytest.raises(
        ModelError,
        match=r"LPIPS-alex weights: 1 missing key\(s\) \['net\.slice3\.6\.weight'\], 0 unexpected",
    ):
        load_lpips(_spec(folder), "cpu", key=KEY)


def test_extra_key_is_refused(lpips_dir: Path, tmp_path: Path) -> None:
    def add(t: dict) -> None:
        t["lin5.model.1.weight"] = torch.zeros(1, 512, 1, 1)

    folder = _rewrite(lpips_dir, tmp_path, add)
    with pytest.raises(
        ModelError, match=r"0 missing key\(s\) \[\], 1 unexpected key\(s\) \['lin5\.model\.1\.weight'\]"
    ):
        load_lpips(_spec(folder), "cpu", key=KEY)


def test_wrong_shape_is_refused(lpips_dir: Path, tmp_path: Path) -> None:
    def reshape(t: dict) -> None:
        t["lin0.model.1.weight"] = torch.zeros(1, 63, 1, 1)
        t["lins.0.model.1.weight"] = torch.zeros(1, 63, 1, 1)

    folder = _rewrite(lpips_dir, tmp_path, reshape)
    with pytest.raises(
        ModelError,
        match=r"lin0\.model\.1\.weight has shape \(1, 63, 1, 1\), LPIPS-alex expects \(1, 64, 1, 1\)",
    ):
        load_lpips(_spec(folder), "cpu", key=KEY)


def test_missing_or_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{tmp_path}': no vgg\.safetensors in"):
        load_lpips(_spec(tmp_path), "cpu", net="vgg", key=KEY)
    (tmp_path / "alex.safetensors").write_bytes(b"\x00garbage" * 8)
    with pytest.raises(
        ModelError, match=rf"{KEY}\.path: {tmp_path / 'alex.safetensors'} is not a readable safetensors file"
    ):
        load_lpips(_spec(tmp_path), "cpu", key=KEY)


@pytest.mark.slow
def test_vgg_weights_load(tmp_path: Path) -> None:
    tiny.save_random_lpips(tmp_path, ("vgg",), seed=0)
    model = load_lpips(_spec(tmp_path), "cpu", net="vgg", key=KEY)
    x = _batch(2, 0)
    assert torch.allclose(lpips_distance(model, x, x), torch.zeros(2), atol=1e-7)
    assert (lpips_distance(model, x, _batch(2, 1)) > 0).all()


# ----------------------------------------------------------------------------- SSIM


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array(
        [
            structural_similarity(
                x.permute(1, 2, 0).double().numpy(),
                y.permute(1, 2, 0).double().numpy(),
                channel_axis=-1,
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for x, y in zip(a, b)
        ]
    )


def test_ssim_matches_scikit_image() -> None:
    x = _batch(3, 0, size=40)[:, :, :, :37]  # non-square on purpose
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    unrelated = _batch(3, 5, size=40)[:, :, :, :37]
    for other in (noisy, unrelated):
        ours = ssim(x, other)
        assert ours.shape == (3,)
        np.testing.assert_allclose(ours.numpy(), _skimage_ssim(x, other), atol=1e-6)
    assert (ssim(x, noisy) > ssim(x, unrelated)).all()


def test_ssim_of_identical_images_is_one() -> None:
    x = _batch(2, 0, size=16)
    assert torch.allclose(ssim(x, x), torch.ones(2))


def test_ssim_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 16, 16\) and \(1, 3, 16, 16\)"):
        ssim(_batch(2, 0, 16), _batch(1, 0, 16))
    with pytest.raises(ValueError, match="8x8 are smaller than the 11x11 SSIM window"):
        ssim(_batch(1, 0, 8), _batch(1, 1, 8))


def test_images_to_tensor() -> None:
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    grey = Image.new("L", (20, 10), 128)
    batch = images_to_tensor([red, grey])
    assert batch.shape == (2, 3, 10, 20) and batch.dtype == torch.float32
    assert batch[0, 0].eq(1).all() and batch[0, 1].eq(0).all()
    assert torch.allclose(batch[1], torch.full((3, 10, 20), 128 / 255))
    with pytest.raises(ValueError, match="images differ in size"):
        images_to_tensor([red, Image.new("RGB", (8, 8))])
    assert images_to_tensor([red, Image.new("RGB", (8, 8))], size=(16, 16)).shape == (2, 3, 16, 16)
