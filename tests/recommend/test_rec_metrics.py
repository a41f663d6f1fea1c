"""Full-ranking Recall@K / NDCG@K against hand-computed values, and the bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pmg.recommend.metrics import bootstrap_interval, recall_ndcg, top_k_items


def test_top_k_masks_training_items_and_breaks_ties_by_index() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [1.0, 1.0, 1.0, 1.0]])
    top = top_k_items(scores, [np.array([1]), np.array([], dtype=np.int64)], k=3)
    assert top.tolist() == [[3, 2, 0], [0, 1, 2]]  # item 1 (score 0.9) is a training item of user 0


def test_top_k_refuses_nan_scores() -> None:
    with pytest.raises(ValueError, match="NaN"):
        top_k_items(torch.tensor([[0.1, float("nan")]]), [np.array([], dtype=np.int64)], k=1)


def test_recall_and_ndcg_match_hand_computed_values() -> None:
    top = np.array([[3, 1, 2, 0], [0, 4, 5, 6], [5, 2, 8, 1]])
    held = [np.array([1, 9]), np.array([7]), np.array([5, 8])]
    got = recall_ndcg(top, held, ks=(1, 3))
    # user 0: one of two held-out items, at rank 2
    # user 1: no hit
    # user 2: both held-out items, at ranks 1 and 3
    l2 = math.log2
    assert got["recall@1"].tolist() == [0.0, 0.0, 0.5]
    assert got["recall@3"].tolist() == [0.5, 0.0, 1.0]
    assert got["ndcg@1"].tolist() == [0.0, 0.0, 1.0]
    expected_ndcg3 = [(1 / l2(3)) / (1 + 1 / l2(3)), 0.0, (1 + 1 / l2(4)) / (1 + 1 / l2(3))]
    np.testing.assert_allclose(got["ndcg@3"], expected_ndcg3, rtol=1e-12)


def test_ideal_dcg_counts_at_most_k_held_out_items() -> None:
    # 3 held-out items, K = 2, both top-2 are hits: a perfect list scores NDCG 1 (IDCG over min(3, 2) items).
    got = recall_ndcg(np.array([[0, 1, 5]]), [np.array([0, 1, 2])], ks=(2,))
    assert got["ndcg@2"][0] == pytest.approx(1.0)
    assert got["recall@2"][0] == pytest.approx(2 / 3)


def test_empty_held_out_set_is_refused() -> None:
    with pytest.raises(ValueError, match="no held-out"):
        recall_ndcg(np.array([[0, 1]]), [np.array([], dtype=np.int64)], ks=(1,))


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((3, 50))
    mean, low, high = bootstrap_interval(values, resamples=500, seed=1)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    assert (low, high) == bootstrap_interval(values, resamples=500, seed=1)[1:]
    # about the normal-theory width of a mean of 150 uniform values (sd 0.29): +-1.96 * 0.29 / sqrt(150) ~ 0.046
    assert 0.02 < (high - low) / 2 < 0.08
    assert bootstrap_interval(np.full((3, 5), 0.25), resamples=100) == (0.25, 0.25, 0.25)


def test_bootstrap_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval(np.array([[0.1, np.nan]]))
