"""LPIPS / SSIM of outputs vs history and target: values, batching, bad input, the stage's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from eval_helpers import build_world, catalogue, load_metric_models, make_params, write_main_run
from PIL import Image

from pmg.config import ModelSpec
from pmg.evaluate.metrics import (
    EvalRequest,
    batched_pair_metrics,
    evaluate_requests,
    load_image,
    naive_pair_metrics,
    per_pair_means,
    ssim_pairs,
    summarize,
)
from pmg.io import read_table, validate
from pmg.models.lpips_metric import ssim
from pmg.schemas import EvalIssues, PairMetrics

ROOT = Path(__file__).resolve().parents[2]


def _smooth(seed: int, size: int = 64) -> torch.Tensor:
    """(3, S, S) in [0, 1]: blobs and gradients, like an image rather than noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    channels = []
    for _ in range(3):
        a, b, c = torch.rand(3, generator=g)
        channels.append(0.5 + 0.4 * torch.sin(6 * a * xx + 5 * b * yy + 3 * c))
    return torch.stack(channels).clamp(0, 1)


def _noisy(image: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    return (image + sigma * noise).clamp(0, 1)


@pytest.fixture(scope="module")
def real_lpips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real LPIPS weights: the project's assets folder, or fetched like `pmg assets fetch` does."""
    local = ROOT / "data" / "assets" / "lpips"
    if (local / "alex.safetensors").is_file() and (local / "vgg.safetensors").is_file():
        return local
    from pmg.assets import DEFAULT_ASSETS, fetch_assets
    from pmg.config import AssetsConfig

    root = tmp_path_factory.mktemp("lpips-real")
    spec = next(s for s in DEFAULT_ASSETS if s.name == "lpips")
    fetch_assets(
        AssetsConfig(folder=str(root), download_cache=str(ROOT / ".asset-cache")), [spec], log=lambda _: None
    )
    return root / "lpips"


@pytest.mark.slow  # real AlexNet + VGG weights (fetched when the assets folder lacks them)
def test_real_lpips_is_zero_for_itself_and_grows_with_noise(real_lpips_dir: Path) -> None:
    models = load_metric_models(ModelSpec(kind="lpips", path=str(real_lpips_dir)), "cpu")
    image = _smooth(0)
    levels = [0.0, 0.02, 0.08, 0.25]
    images = torch.stack([_noisy(image, s) if s else image for s in levels])  # (4, 3, 64, 64)
    pairs = torch.tensor([[0, k] for k in range(len(levels))])
    values = batched_pair_metrics(images, pairs, models)
    for net in ("alex", "vgg"):
        d = values[f"lpips_{net}"]
        assert abs(float(d[0])) < 1e-6, net
        assert (d[1:] > d[:-1]).all(), (net, d.tolist())
    s = values["ssim"]
    assert abs(float(s[0]) - 1.0) < 1e-6 and (s[1:] < s[:-1]).all()


def test_ssim_of_an_image_with_itself_is_one(metric_models) -> None:
    image = _smooth(1)[None]
    assert float(ssim(image, image)[0]) == pytest.approx(1.0, abs=1e-7)
    values = batched_pair_metrics(
        torch.cat([image, _noisy(image, 0.1)]), torch.tensor([[0, 0], [0, 1]]), metric_models
    )
    assert float(values["ssim"][0]) == pytest.approx(1.0, abs=1e-7)
    assert float(values["lpips_alex"][0]) == pytest.approx(0.0, abs=1e-6)
    assert float(values["ssim"][1]) < 0.99 and float(values["lpips_alex"][1]) > 0


def test_batched_and_naive_paths_agree(metric_models) -> None:
    images = torch.stack(
        [
            _smooth(k, 32) if k % 2 else torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(k))
            for k in range(6)
        ]
    )
    g = torch.Generator().manual_seed(0)
    pairs = torch.randint(0, 6, (13, 2), generator=g)  # shared images, repeats, self-pairs
    batched = batched_pair_metrics(images, pairs, metric_models, batch_size=4, chunk_pairs=5)
    naive = naive_pair_metrics(images, pairs, metric_models)
    assert set(batched) == {"lpips_alex", "lpips_vgg", "ssim"}
    for key in batched:
        assert batched[key].shape == (13,)
        assert torch.allclose(batched[key], naive[key], atol=1e-5, rtol=0), key
    # Chunking does not change anything either.
    whole = batched_pair_metrics(images, pairs, metric_models, batch_size=64, chunk_pairs=1000)
    for key in batched:
        assert torch.allclose(batched[key], whole[key], atol=1e-6, rtol=0), key


def test_ssim_with_shared_statistics_equals_the_per_pair_ssim() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 24, 37, generator=g)  # not square, odd width
    a, b = torch.tensor([0, 1, 2, 2, 4]), torch.tensor([4, 1, 3, 0, 4])
    shared = ssim_pairs(images, a, b, batch_size=2)
    assert torch.allclose(shared, ssim(images[a], images[b]), atol=1e-6, rtol=0)
    assert float(shared[1]) == pytest.approx(1.0) and float(shared[4]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="smaller than"):
        ssim_pairs(torch.rand(1, 3, 8, 8), torch.tensor([0]), torch.tensor([0]))


def test_load_image_converts_resizes_and_counts(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (10, 10, 30, 30))
    rgba.save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png", 20)
    assert loaded.pixels.shape == (3, 20, 20) and loaded.pixels.dtype == np.float32
    assert set(loaded.adjustments) == {"converted", "resized"}
    assert np.allclose(loaded.pixels[:, 0, 0], 1.0)  # transparent -> white, not black or red
    Image.new("RGB", (20, 20), (0, 128, 255)).save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png", 20).adjustments == ()
    (tmp_path / "c.png").write_bytes(b"not a png")
    assert load_image(tmp_path / "c.png", 20).problem == "unreadable"
    assert load_image(tmp_path / "nope.png", 20).problem == "missing"
    assert load_image(None, 20).problem == "missing"


def test_bad_inputs_are_counted_not_crashing(tmp_path: Path, metric_models) -> None:
    good = tmp_path / "good.png"
    Image.fromarray((np.asarray(_smooth(2, 32)).transpose(1, 2, 0) * 255).astype(np.uint8)).save(good)
    grey = tmp_path / "grey.png"
    Image.new("L", (50, 50), 128).save(grey)  # other mode and size
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    missing = tmp_path / "missing.png"
    h = (("h1", good), ("h2", grey))
    requests = [
        EvalRequest("u1", "t1", good, h, good),  # fine (one adjusted reference)
        EvalRequest("u2", "t2", missing, h, good),  # no output
        EvalRequest("u3", "t3", broken, h, good),  # unreadable output
        EvalRequest("u4", "t4", grey, (), good),  # no history at all (output adjusted)
        EvalRequest("u5", "t5", good, (("h1", missing), ("h2", None)), good),  # no usable history image
        EvalRequest(
            "u6", "t6", good, (("h1", good), ("h3", missing)), None
        ),  # one history image and the target missing
    ]
    evaluation = evaluate_requests(
        requests, metric_models, scenario="clothing", image_size=32, batch_size=3, chunk_users=4
    )
    validate(evaluation.pairs, PairMetrics, "pairs")
    validate(evaluation.issues, EvalIssues, "issues")
    m = summarize(evaluation, "pmg")
    assert m["n_pairs"] == 6 and m["n_skipped"] == 2
    assert m["skipped"] == {
        "output_missing": 1,
        "output_unreadable": 1,
        "target_missing": 1,
        "target_unreadable": 0,
        "history_image_missing": 3,
        "history_image_unreadable": 0,
        "history_empty": 2,
    }
    assert m["adjusted"]["converted"] >= 2 and m["adjusted"]["resized"] >= 2
    assert m["n_history"] == 2 and m["n_target"] == 3  # u1, u6 / u1, u4, u5
    assert m["lpips_history"] == m["lpips_alex_history"] and m["lpips_target"] == m["lpips_alex_target"]
    json.dumps(m)  # serialisable as is


def test_aggregation_weighs_every_pair_once(metric_models, tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 5, 5)]
    paths = []
    for k, colour in enumerate(colours):
        path = tmp_path / f"{k}.png"
        arr = np.asarray(_smooth(k, 32)).transpose(1, 2, 0) * 0.5 + np.array(colour) / 510.0
        Image.fromarray((arr * 255).clip(0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    requests = [
        EvalRequest("a", "t", paths[0], (("x", paths[1]), ("y", paths[2]), ("z", paths[3])), paths[3]),
        EvalRequest("b", "t", paths[1], (("x", paths[0]),), paths[2]),
    ]
    evaluation = evaluate_requests(requests, metric_models, scenario="clothing", image_size=32)
    rows = evaluation.pairs
    per_pair = per_pair_means(rows)
    a_hist = rows[(rows.user_id == "a") & (rows.reference == "history")]["lpips_alex"].mean()
    b_hist = rows[(rows.user_id == "b") & (rows.reference == "history")]["lpips_alex"].mean()
    m = summarize(evaluation)
    assert m["lpips_alex_history"] == pytest.approx((a_hist + b_hist) / 2, abs=1e-6)  # not the mean of 4 rows
    assert len(per_pair) == 4


def test_run_evaluate_writes_validated_tables_and_metrics(tmp_path: Path, metric_models) -> None:
    from pmg.stages import evaluate as evaluate_stage
    from pmg.stages.report import summarize_scenarios

    params = make_params(tmp_path)
    prepared = build_world(tmp_path / "prepared")
    write_main_run(prepared, params)
    # One chosen output vanishes: counted, not a crash.
    (Path(params.generate.out) / "clothing" / "u3" / "g9").joinpath(
        "cand_2.png"
    ).unlink()  # the chosen one (highest z)
    where = catalogue(params, tmp_path)
    metrics = evaluate_stage.run(params, "clothing", catalogue=where, metric_models=metric_models, log=lambda _: None)
    out = Path(params.evaluate.out) / "clothing"
    assert json.loads(where.metrics("evaluate", "clothing").read_text()) == metrics
    assert metrics["n_pairs"] == 4 and metrics["n_skipped"] == 1 and metrics["skipped"]["output_missing"] == 1
    for key in (
        "lpips_alex_history",
        "lpips_vgg_history",
        "ssim_history",
        "lpips_alex_target",
        "ssim_target",
        "lpips_history",
        "lpips_target",
    ):
        assert key in metrics
    assert metrics["lpips_vgg_history"] is not None  # the models given (alex + vgg) decide, not evaluate.nets
    assert (
        metrics["ground_truth"]["soft+keywords"]["n_colour"] == 4
    )  # the vanished image is a miss, not a gap
    pairs = read_table(out / "pairs.parquet", PairMetrics)
    assert (
        set(pairs["variant"]) == {"soft+keywords"} and len(pairs) == 11
    )  # history rows 3 + 2 + 3 of u1, u2, u10, and their 3 targets
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind
    weights = pd.read_csv(where.weights_csv("clothing"))
    assert set(weights["metric"]) == {"d_p", "d_t", "z"} and weights["pair"].nunique() == 2
    assert where.weights_svg("clothing").read_text().startswith("<svg")
    summary = summarize_scenarios(params, where)
    assert (
        summary["overall"]["n_pairs"] == 4
        and summary["clothing"]["lpips_history"] == metrics["lpips_history"]
    )
