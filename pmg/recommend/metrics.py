"""Full-ranking top-K metrics and their intervals (PMG §4.6, Table 4).

Protocol (decision). Every evaluated user is ranked against *all* items of
the catalogue (no sampled negatives): sampled-negative metrics overstate
accuracy and can even reorder models (Krichene & Rendle, KDD 2020). The
items the user interacted with in training are masked out (they are not
recommendations), everything else competes, held-out items included.

* `Recall@K = |top-K ∩ held-out| / |held-out|` (the denominator is the whole
  held-out set, as in MMGCN's `full_accuracy`);
* `NDCG@K = DCG@K / IDCG@K`, binary relevance, `DCG = Σ 1/log2(rank + 1)`
  with ranks from 1, and `IDCG` the DCG of `min(|held-out|, K)` hits at the top.

A user with an empty held-out set has no defined metric and is never passed
here (`pmg.recommend.data` drops and counts such users).

Intervals. A setting's figure is the mean over test users and training
seeds. Its 95% interval is a percentile bootstrap that resamples users and
seeds together (each replicate draws users with replacement and seeds with
replacement), so both the users' sampling noise and the seed-to-seed noise
of training show. Differences between two settings are paired: per user and
seed the difference of the two metrics, bootstrapped the same way (the
settings share the users, the seeds and the held-out items).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def top_k_items(scores: torch.Tensor, seen: Sequence[np.ndarray], k: int) -> torch.Tensor:
    """The `k` best items per user, training items excluded.

    Args:
        scores: (U, I) predicted scores of U users for all I items.
        seen: U arrays of item indices to mask (the user's training items).
        k: how many to return (at most I).

    Returns:
        (U, k) item indices, best first. Ties break toward the lower index
        (a stable sort), so the result does not depend on the device.
    """
    if scores.ndim != 2 or len(seen) != scores.shape[0]:
        raise ValueError(f"scores must be (U, I) with one 'seen' array per user; got {tuple(scores.shape)}, {len(seen)}")
    masked = scores.detach().float().clone()
    if not torch.isfinite(masked).all():
        raise ValueError("scores contain NaN or infinite values")
    rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(seen)]) if len(seen) else np.empty(0)
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen]) if len(seen) else np.empty(0)
    if rows.size:
        masked[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)] = -torch.inf
    k = min(k, masked.shape[1])
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def recall_ndcg(
    top: torch.Tensor | np.ndarray, held_out: Sequence[np.ndarray], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Recall@K and NDCG@K per user from ranked lists.

    Args:
        top: (U, K_max) ranked item indices, best first (`top_k_items`).
        held_out: U non-empty arrays of held-out item indices.
        ks: the cut-offs, each <= K_max.

    Returns:
        `{"recall@K": (U,), "ndcg@K": (U,)}` for every K, float64.
    """
    top = np.asarray(top.cpu() if isinstance(top, torch.Tensor) else top)
    if top.ndim != 2 or top.shape[0] != len(held_out):
        raise ValueError(f"top must be (U, K) with one held-out array per user; got {top.shape}, {len(held_out)}")
    if any(k > top.shape[1] or k < 1 for k in ks):
        raise ValueError(f"cut-offs {list(ks)} must lie in 1..{top.shape[1]} (the ranked list's length)")
    hits = np.zeros(top.shape, dtype=bool)  # (U, K_max)
    sizes = np.zeros(len(held_out))
    for u, items in enumerate(held_out):
        items = np.unique(np.asarray(items, dtype=np.int64))
        if items.size == 0:
            raise ValueError(f"user row {u} has no held-out item; its metrics are undefined")
        hits[u] = np.isin(top[u], items)
        sizes[u] = items.size
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))  # rank 1 -> 1/log2(2)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        dcg = (hits[:, :k] * discount[:k]).sum(axis=1)
        ideal = np.array([discount[: int(min(s, k))].sum() for s in sizes])
        out[f"recall@{k}"] = hits[:, :k].sum(axis=1) / sizes
        out[f"ndcg@{k}"] = dcg / ideal
    return out


def bootstrap_interval(
    values: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval over users and seeds together.

    Args:
        values: (S, U) one value per training seed and user (for a paired
            difference: the per-seed, per-user differences).
        resamples: bootstrap replicates.
        seed: the resampling seed (the interval is reproducible).
        level: the interval's coverage.

    Returns:
        (mean, low, high).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"values must be a non-empty (seeds, users) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values contain NaN or infinite entries")
    n_seeds, n_users = values.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2**22 // values.size)  # replicates per gather: about 32 MB of float64 at a time
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        seeds = rng.integers(0, n_seeds, (b, n_seeds))  # (b, S)
        users = rng.integers(0, n_users, (b, n_users))  # (b, U)
        means[start : start + b] = values[seeds[:, :, None], users[:, None, :]].mean(axis=(1, 2))
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(values.mean()), float(low), float(high)


__all__ = ["bootstrap_interval", "recall_ndcg", "top_k_items"]
