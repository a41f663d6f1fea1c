"""LPIPS and SSIM of the chosen outputs against history and target images (PMG 4.1.2).

For every evaluated (user, target) pair the chosen output image is compared with

* each of the user's history item images — personalisation; the pair's value
  is the mean over its history images;
* the target item's image — accuracy.

CLIP is not used: it selected the candidates (PMG 4.1.2).

Resolution and value range, one for every image: RGB, alpha composited onto
white, resized (bicubic) to `image_size` x `image_size` (64 px by default;
the mini generator draws 32 px, prepared items are 128 px, so comparing at one
size is unavoidable), then [0, 1] floats. LPIPS maps them to [-1, 1] itself
(`normalize=True` in the `lpips` package), SSIM reads them with
`data_range = 1` (see :func:`pmg.models.lpips_metric.ssim`).

Batched path. All (output, reference) pairs of many users are stacked and cut
into chunks of `chunk_pairs`. Within a chunk, each distinct image goes through
the LPIPS trunk once (`batch_size` images per forward pass) and its
unit-normalised features are reused by every pair it belongs to — an output
meets five history images and a target, and catalogue images recur across
users — so the expensive part runs once per image, not twice per pair. The
distance is then the package's own formula on those features
(`sum_k mean_hw(lin_k((f_a - f_b)^2))`). SSIM likewise filters each
image's local mean and second moment once (:func:`ssim_pairs`; only the
cross moment is per pair), with the Gaussian filter as two matrix products.
:func:`naive_pair_metrics` — one `lpips.LPIPS(a, b)` call and one
`pmg.models.lpips_metric.ssim` call per pair — gives the same values to
float32 rounding (the tests hold them to 1e-5).

Bad input never crashes a run; it is counted and reported:

* `output_missing` / `output_unreadable`: the pair is skipped whole;
* `target_missing` / `target_unreadable`: the pair's accuracy part is skipped;
* `history_image_missing` / `history_image_unreadable`: that reference is
  dropped; `history_empty`: none of the pair's history images is usable (or
  the pair has none), so its personalisation part is skipped;
* `resized` / `converted` (adjustments, not skips): an image of another size,
  or of another mode than RGB, was brought to the common format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from pmg.models.lpips_metric import NETS, ssim

METRIC_COLUMNS = ("lpips_alex", "lpips_vgg", "ssim")
"""Per-pair metric columns of the PairMetrics table, in the order every table shows them."""

METRIC_LABELS: dict[str, tuple[str, str]] = {
    "lpips_alex": ("LPIPS-Alex", "↓"),
    "lpips_vgg": ("LPIPS-VGG", "↓"),
    "ssim": ("SSIM", "↑"),
}
"""Per-pair metric -> (label, arrow of the better direction), for the report and the ablation tables."""

REFERENCES = ("history", "target")


def metric_headers() -> list[tuple[str, str]]:
    """(summary key, header) of every metric per reference: `("lpips_alex_history", "History LPIPS-Alex ↓")`, ...

    The one list the ablation tables, the headline's overall and the report
    show, so a new per-pair metric is declared here (and computed below)
    and nowhere else besides its `PairMetrics` column.
    """
    return [
        (f"{column}_{reference}", f"{reference.capitalize()} {METRIC_LABELS[column][0]} {METRIC_LABELS[column][1]}")
        for reference in REFERENCES
        for column in METRIC_COLUMNS
    ]

SKIP_REASONS = (
    "output_missing",
    "output_unreadable",
    "target_missing",
    "target_unreadable",
    "history_image_missing",
    "history_image_unreadable",
    "history_empty",
)
ADJUST_REASONS = ("resized", "converted")


# ------------------------------------------------------------------- models


@dataclass(frozen=True)
class MetricModels:
    """The LPIPS networks an evaluation uses, by trunk name (`alex`, `vgg`)."""

    lpips: Mapping[str, torch.nn.Module]

    @property
    def nets(self) -> tuple[str, ...]:
        return tuple(net for net in NETS if net in self.lpips)


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class LoadedImage:
    """An image in the evaluation's format, or why there is none.

    Attributes:
        pixels: (3, S, S) float32 in [0, 1], or None.
        problem: `missing` or `unreadable` when `pixels` is None.
        adjustments: `resized` and/or `converted` when the file was not
            already S x S RGB.
    """

    pixels: np.ndarray | None
    problem: str | None = None
    adjustments: tuple[str, ...] = ()


def load_image(path: str | Path | None, size: int) -> LoadedImage:
    """Read an image file into the evaluation's format (see the module docstring).

    Args:
        path: the file; None (an item without an image) counts as missing.
        size: the side S in pixels.
    """
    if path is None or not Path(path).is_file():
        return LoadedImage(None, "missing")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return LoadedImage(None, "unreadable")
    adjustments: list[str] = []
    if image.mode != "RGB":
        adjustments.append("converted")
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            image = image.convert("RGB")
    if image.size != (size, size):
        adjustments.append("resized")
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0  # (3, S, S)
    return LoadedImage(np.ascontiguousarray(pixels), None, tuple(adjustments))


# --------------------------------------------------------------- metrics


def _check_lpips_model(model: torch.nn.Module) -> None:
    if not getattr(model, "lpips", False) or getattr(model, "spatial", True) or model.version != "0.1":
        raise ValueError("the batched path needs an lpips.LPIPS(version='0.1', lpips=True, spatial=False)")


@torch.inference_mode()
def lpips_features(
    model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 32
) -> list[torch.Tensor]:
    """The unit-normalised trunk features LPIPS compares, per layer.

    Args:
        model: an `lpips.LPIPS` from :func:`pmg.models.load_lpips`.
        images: (N, 3, H, W) RGB in [0, 1].
        batch_size: images per forward pass.

    Returns:
        One (N, C_k, H_k, W_k) float32 CPU tensor per trunk layer k.
    """
    import lpips

    _check_lpips_model(model)
    device = next(model.parameters()).device
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(model.L)]
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device, torch.float32)
        outs = model.net.forward(model.scaling_layer(2 * batch - 1))  # [-1, 1] as normalize=True does
        for k in range(model.L):
            per_layer[k].append(lpips.normalize_tensor(outs[k]).cpu())
    return [torch.cat(parts) for parts in per_layer]


@torch.inference_mode()
def lpips_from_features(
    model: torch.nn.Module,
    features: Sequence[torch.Tensor],
    index_a: torch.Tensor,
    index_b: torch.Tensor,
    *,
    batch_size: int = 32,
) -> torch.Tensor:
    """LPIPS distances of image pairs from precomputed :func:`lpips_features`.

    Args:
        model: the network the features came from (its linear heads are used).
        features: per-layer (N, C_k, H_k, W_k) features of N images.
        index_a: (P,) indices into the N images.
        index_b: (P,) indices, paired with `index_a`.
        batch_size: pairs per step (bounds the (P, C_k, H_k, W_k) temporaries).

    Returns:
        (P,) float32 distances on CPU.
    """
    device = next(model.parameters()).device
    out = []
    for start in range(0, index_a.shape[0], batch_size):
        a = index_a[start : start + batch_size]
        b = index_b[start : start + batch_size]
        total = torch.zeros(a.shape[0], device=device)
        for k, feats in enumerate(features):
            diff = (feats[a].to(device) - feats[b].to(device)) ** 2  # (p, C_k, H_k, W_k)
            total += model.lins[k](diff).mean(dim=(1, 2, 3))  # lin_k -> (p, 1, H_k, W_k) -> (p,)
        out.append(total.cpu())
    return torch.cat(out) if out else torch.empty(0)


def _gaussian_band(size: int, window: int, sigma: float) -> torch.Tensor:
    """(size - window + 1, size) float64: row i holds the Gaussian window at columns i..i+window-1.

    `band @ X` is the "valid" Gaussian filtering of `X` along its rows, as a
    matrix product (BLAS) instead of a float64 convolution (no fast kernel on CPU).
    """
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    band = torch.zeros(size - window + 1, size, dtype=torch.float64)
    for i in range(size - window + 1):
        band[i, i : i + window] = g
    return band


def ssim_pairs(
    images: torch.Tensor,
    index_a: torch.Tensor,
    index_b: torch.Tensor,
    *,
    batch_size: int = 32,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """SSIM of image pairs with per-image statistics computed once.

    The same definition as :func:`pmg.models.lpips_metric.ssim` (Gaussian
    window 11, sigma 1.5, valid region, population covariances, float64),
    but each image's local mean and second moment are filtered once and
    reused by every pair it is in; only the cross moment is per pair. The
    separable filter is two matrix products.

    Args:
        images: (N, C, H, W) in [0, data_range].
        index_a, index_b: (P,) indices into `images`.

    Returns:
        (P,) float32.
    """
    height, width = images.shape[-2:]
    if min(height, width) < window_size:
        raise ValueError(
            f"images of {height}x{width} are smaller than the {window_size}x{window_size} SSIM window"
        )
    rows = _gaussian_band(height, window_size, sigma)  # (h, H)
    cols = _gaussian_band(width, window_size, sigma).T.contiguous()  # (W, w)

    def blur(t: torch.Tensor) -> torch.Tensor:  # (..., H, W) -> (..., h, w)
        return rows @ t @ cols

    x = images.detach().to("cpu", torch.float64)
    mu = blur(x)  # (N, C, h, w)
    second = blur(x * x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = []
    for start in range(0, index_a.shape[0], batch_size):
        a, b = index_a[start : start + batch_size], index_b[start : start + batch_size]
        mu_a, mu_b = mu[a], mu[b]
        var_a, var_b = second[a] - mu_a**2, second[b] - mu_b**2
        cov = blur(x[a] * x[b]) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        out.append(ssim_map.reshape(a.shape[0], -1).mean(dim=1).float())
    return torch.cat(out) if out else torch.empty(0)


def batched_pair_metrics(
    images: torch.Tensor,
    pairs: torch.Tensor,
    models: MetricModels,
    *,
    batch_size: int = 32,
    chunk_pairs: int = 256,
    with_ssim: bool = True,
) -> dict[str, torch.Tensor]:
    """LPIPS (every loaded trunk) and SSIM of many image pairs, batched.

    Args:
        images: (N, 3, S, S) RGB in [0, 1], every image once.
        pairs: (P, 2) long indices into `images`: (output, reference).
        models: the LPIPS networks.
        batch_size: images (or pairs) per forward pass.
        chunk_pairs: pairs whose distinct images' features are held at once
            (bounds memory: VGG features of a 64 px image take about 2 MB).
        with_ssim: also compute SSIM (off: LPIPS only, e.g. to time it).

    Returns:
        `lpips_<net>` for each loaded net and `ssim` (when asked), each (P,) float32.
    """
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must have shape (P, 2), got {tuple(pairs.shape)}")
    results: dict[str, list[torch.Tensor]] = {f"lpips_{net}": [] for net in models.nets}
    if with_ssim:
        results["ssim"] = []
    for start in range(0, pairs.shape[0], chunk_pairs):
        chunk = pairs[start : start + chunk_pairs]
        distinct, inverse = torch.unique(chunk.reshape(-1), return_inverse=True)
        local = inverse.reshape(-1, 2)  # (p, 2) indices into `distinct`
        chunk_images = images[distinct]  # (n, 3, S, S)
        for net in models.nets:
            model = models.lpips[net]
            features = lpips_features(model, chunk_images, batch_size=batch_size)
            results[f"lpips_{net}"].append(
                lpips_from_features(model, features, local[:, 0], local[:, 1], batch_size=batch_size)
            )
            del features
        if with_ssim:
            results["ssim"].append(ssim_pairs(chunk_images, local[:, 0], local[:, 1], batch_size=batch_size))
    return {name: (torch.cat(parts) if parts else torch.empty(0)) for name, parts in results.items()}


@torch.inference_mode()
def naive_pair_metrics(
    images: torch.Tensor, pairs: torch.Tensor, models: MetricModels
) -> dict[str, torch.Tensor]:
    """The reference path: one `lpips.LPIPS(a, b)` call and one SSIM call per pair.

    Same arguments and result as :func:`batched_pair_metrics`; used by the
    tests (agreement) and the benchmark (speed).
    """
    results: dict[str, list[float]] = {f"lpips_{net}": [] for net in models.nets}
    results["ssim"] = []
    for i, j in pairs.tolist():
        a, b = images[i : i + 1], images[j : j + 1]
        for net in models.nets:
            model = models.lpips[net]
            device = next(model.parameters()).device
            results[f"lpips_{net}"].append(
                float(model(a.to(device), b.to(device), normalize=True).reshape(()))
            )
        results["ssim"].append(float(ssim(a, b)[0]))
    return {name: torch.tensor(values, dtype=torch.float32) for name, values in results.items()}


# ----------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalRequest:
    """One chosen output to evaluate.

    Attributes:
        user_id, target_item: the pair.
        output: the chosen output image (None when there is none).
        history: (item id, image file or None) of each history item, oldest first.
        target: the target item's image file (or None).
        variant: the method variant that made the output (`pmg` for the main run).
    """

    user_id: str
    target_item: str
    output: Path | None
    history: tuple[tuple[str, Path | None], ...]
    target: Path | None
    variant: str = "pmg"


@dataclass
class Evaluation:
    """What :func:`evaluate_requests` measured and what it had to skip or adjust.

    Attributes:
        pairs: the PairMetrics rows (one per output x usable reference).
        requests: (variant, user_id, target_item) of every request, in order.
        issues: EvalIssues rows: one per skip or adjustment, with the file.
    """

    pairs: pd.DataFrame
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    issues: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ISSUE_COLUMNS))


OUTPUT_COLUMNS = ["variant", "user_id", "target_item", "image"]
_PAIR = ["user_id", "scenario", "target_item"]


def chosen_outputs(scores: pd.DataFrame, candidates: pd.DataFrame, candidates_dir: Path) -> pd.DataFrame:
    """One row per scored pair: the chosen candidate's `variant` and `image` path (None when missing).

    Args:
        scores: a `Scores` table.
        candidates: the `Candidates` table it scored.
        candidates_dir: the folder the candidates' `image_path`s are relative to.

    A chosen candidate absent from the Candidates table (tables out of step)
    keeps its pair with no image, so it is counted as `output_missing`. Rows
    come in the Scores table's order.
    """
    chosen = scores.loc[scores["chosen"], [*_PAIR, "candidate"]]
    merged = chosen.merge(
        candidates[[*_PAIR, "candidate", "variant", "image_path"]], on=[*_PAIR, "candidate"], how="left"
    )
    merged["image"] = [None if pd.isna(p) else Path(candidates_dir) / str(p) for p in merged["image_path"]]
    return merged


def requests_from_outputs(outputs: pd.DataFrame, prepared, default_variant: str) -> list[EvalRequest]:
    """EvalRequests of chosen outputs (`chosen_outputs`) against the prepared history and target images.

    A row's `variant` names its request (`default_variant` where it has none);
    an item without a catalogued image is a missing image, counted downstream.
    """
    history_of = {
        str(u): json.loads(h) for u, h in zip(prepared.splits["user_id"], prepared.splits["history_items"])
    }

    def image_of(item: str) -> Path | None:
        try:
            return prepared.image_file(item)
        except Exception:  # noqa: BLE001 - unknown item: counted as a missing image
            return None

    requests = []
    for row in outputs.itertuples(index=False):
        user, target = str(row.user_id), str(row.target_item)
        variant = default_variant if pd.isna(getattr(row, "variant", None)) else str(row.variant)
        history = tuple((item, image_of(item)) for item in history_of.get(user, []))
        requests.append(EvalRequest(user, target, row.image, history, image_of(target), variant))
    return requests


PAIR_COLUMNS = (
    "scenario",
    "variant",
    "user_id",
    "target_item",
    "reference",
    "position",
    "reference_item",
    "lpips_alex",
    "lpips_vgg",
    "ssim",
    "output_image",
)
ISSUE_COLUMNS = ("scenario", "variant", "user_id", "target_item", "kind", "reason", "path")


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


_ROLE_PREFIX = {"output": "output", "target": "target", "history": "history_image"}


class _ChunkImages:
    """The images of one chunk of requests: each file read once, issues recorded per use."""

    def __init__(self, scenario: str, image_size: int, issues: list[dict]) -> None:
        self.scenario = scenario
        self.image_size = image_size
        self.issues = issues
        self.cache: dict[str, LoadedImage] = {}
        self.index: dict[str, int] = {}
        self.arrays: list[np.ndarray] = []

    def fetch(self, path: Path | None, request: EvalRequest, role: str) -> int | None:
        """The image's row in `arrays`, or None (the problem recorded as an issue)."""
        key = str(path) if path is not None else ""
        loaded = self.cache.get(key) if path is not None else None
        if loaded is None:
            loaded = load_image(path, self.image_size)
            if path is not None:
                self.cache[key] = loaded
        base = {
            "scenario": self.scenario,
            "variant": request.variant,
            "user_id": request.user_id,
            "target_item": request.target_item,
            "path": key,
        }
        if loaded.pixels is None:
            reason = f"{_ROLE_PREFIX[role]}_{loaded.problem}"
            self.issues.append({**base, "kind": "skipped", "reason": reason})
            return None
        for adjustment in loaded.adjustments:
            self.issues.append({**base, "kind": "adjusted", "reason": adjustment})
        if key not in self.index:
            self.index[key] = len(self.arrays)
            self.arrays.append(loaded.pixels)
        return self.index[key]


def evaluate_requests(
    requests: Sequence[EvalRequest],
    models: MetricModels,
    *,
    scenario: str,
    image_size: int = 64,
    batch_size: int = 32,
    chunk_users: int = 64,
    chunk_pairs: int = 256,
) -> Evaluation:
    """Measure every request's output against its history and target images.

    Users are processed `chunk_users` at a time: their images are read once
    each (a file shared by several users of a chunk is read once) and all
    their (output, reference) pairs go through :func:`batched_pair_metrics`.

    Args:
        requests: the outputs to evaluate.
        models: LPIPS networks (`alex` and/or `vgg`).
        scenario: written into every row.
        image_size: the common side S (see the module docstring).
        batch_size: images per LPIPS forward pass.
        chunk_users: requests whose images are held in memory at once.
        chunk_pairs: see :func:`batched_pair_metrics`.

    Returns:
        The per-reference rows (not yet validated) and the issues.
    """
    rows: list[dict] = []
    issues: list[dict] = []
    seen: list[tuple[str, str, str]] = []
    for chunk in _chunks(list(requests), chunk_users):
        images = _ChunkImages(scenario, image_size, issues)
        fetch = images.fetch
        pair_index: list[tuple[int, int]] = []
        pair_meta: list[dict] = []
        for request in chunk:
            seen.append((request.variant, request.user_id, request.target_item))
            meta = {
                "scenario": scenario,
                "variant": request.variant,
                "user_id": request.user_id,
                "target_item": request.target_item,
                "output_image": str(request.output) if request.output is not None else "",
            }
            out = fetch(request.output, request, "output")
            if out is None:
                continue
            usable = 0
            for position, (item_id, path) in enumerate(request.history):
                ref = fetch(path, request, "history")
                if ref is None:
                    continue
                usable += 1
                pair_index.append((out, ref))
                pair_meta.append(
                    {**meta, "reference": "history", "position": position, "reference_item": item_id}
                )
            if usable == 0:
                issues.append(
                    {
                        **{k: meta[k] for k in ("scenario", "variant", "user_id", "target_item")},
                        "path": "",
                        "kind": "skipped",
                        "reason": "history_empty",
                    }
                )
            ref = fetch(request.target, request, "target")
            if ref is not None:
                pair_index.append((out, ref))
                pair_meta.append(
                    {**meta, "reference": "target", "position": 0, "reference_item": request.target_item}
                )
        if not pair_index:
            continue
        values = batched_pair_metrics(
            torch.from_numpy(np.stack(images.arrays)),  # (n, 3, S, S)
            torch.tensor(pair_index, dtype=torch.long),
            models,
            batch_size=batch_size,
            chunk_pairs=chunk_pairs,
        )
        for i, meta in enumerate(pair_meta):
            row = dict(meta)
            for column in METRIC_COLUMNS:
                row[column] = float(values[column][i]) if column in values else math.nan
            rows.append(row)
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    return Evaluation(pairs=pairs, requests=seen, issues=pd.DataFrame(issues, columns=list(ISSUE_COLUMNS)))


# ------------------------------------------------------------ aggregates


def per_pair_means(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, user, target, reference): history rows averaged.

    Returns:
        Columns variant, user_id, target_item, reference and the metrics.
    """
    keys = ["variant", "user_id", "target_item", "reference"]
    if pairs.empty:
        return pd.DataFrame(columns=[*keys, *METRIC_COLUMNS])
    return pairs.groupby(keys, sort=True, as_index=False)[list(METRIC_COLUMNS)].mean()


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.mean()), 6) if len(values) else None


def _sem(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.std(ddof=1) / math.sqrt(len(values))), 6) if len(values) > 1 else None


def summarize(evaluation: Evaluation, variant: str = "pmg", *, with_sem: bool = False) -> dict:
    """Aggregate metrics of one variant, as written to the metrics JSON.

    Each (user, target) pair counts once: its history value is the mean over
    its history images, then pairs are averaged.

    Returns:
        A flat mapping: `lpips_alex_history`, `lpips_vgg_history`,
        `ssim_history`, the same for `_target`, `lpips_history` /
        `lpips_target` (aliases of the AlexNet values the registry gates
        read), `n_pairs` (requests), `n_history` / `n_target` (pairs with a
        value), `n_skipped` (pairs with no value at all), `skipped` and
        `adjusted` (reason -> count). Missing values are null. With
        `with_sem`, a `<metric>_sem` standard error per metric.
    """
    means = per_pair_means(evaluation.pairs[evaluation.pairs["variant"] == variant])
    out: dict = {}
    for reference in REFERENCES:
        part = means[means["reference"] == reference]
        for column in METRIC_COLUMNS:
            out[f"{column}_{reference}"] = _mean(part[column]) if column in part else None
            if with_sem:
                out[f"{column}_{reference}_sem"] = _sem(part[column]) if column in part else None
        out[f"n_{reference}"] = len(part)
    out["lpips_history"] = out["lpips_alex_history"]
    out["lpips_target"] = out["lpips_alex_target"]
    requested = {r for r in evaluation.requests if r[0] == variant}
    measured = set(
        map(tuple, means[["variant", "user_id", "target_item"]].itertuples(index=False, name=None))
    )
    out["n_pairs"] = len(requested)
    out["n_skipped"] = len(requested - measured)
    issues = evaluation.issues[evaluation.issues["variant"] == variant]
    for kind, reasons in (("skipped", SKIP_REASONS), ("adjusted", ADJUST_REASONS)):
        counts = issues.loc[issues["kind"] == kind, "reason"].value_counts()
        out[kind] = {reason: int(counts.get(reason, 0)) for reason in reasons}
    return out
