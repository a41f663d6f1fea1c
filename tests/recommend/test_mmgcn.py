"""MMGCN on tiny graphs: message passing, BPR training, the visual branch, masks without NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmg.recommend.data import align_features, split_interactions
from pmg.recommend.experiment import evaluate
from pmg.recommend.mmgcn import MMGCN, MeanAdjacency, NegativeSampler, edges_tensor, fit

from recommend_helpers import planted_interactions  # tests/recommend/ is on sys.path


def _tiny_graph() -> MeanAdjacency:
    # users 0, 1; items 0, 1, 2 (nodes 2, 3, 4); user 0 saw items 0 and 1 (twice), user 1 saw item 2.
    users, items = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 1, 2])
    return MeanAdjacency(users, items, n_users=2, n_items=3)


def test_mean_adjacency_averages_neighbours_and_its_gradient_is_the_transpose() -> None:
    adjacency = _tiny_graph()
    dense = torch.zeros(5, 5)
    for u, i in [(0, 0), (0, 1), (1, 2)]:  # the duplicate edge counts once
        dense[u, 2 + i] = dense[2 + i, u] = 1.0
    dense = dense / dense.sum(1, keepdim=True)
    x = torch.randn(5, 3, requires_grad=True)
    out = adjacency(x)
    torch.testing.assert_close(out, dense @ x)
    torch.testing.assert_close(out[0], (x[2] + x[3]) / 2)  # user 0: mean of items 0 and 1
    weights = torch.randn(5, 3)
    (out * weights).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ weights)


def test_negative_sampler_avoids_training_items() -> None:
    users = torch.tensor([0, 0, 0, 1])
    items = torch.tensor([0, 1, 2, 3])
    sampler = NegativeSampler(users, items, n_items=20, generator=torch.Generator().manual_seed(0))
    negatives = sampler(torch.zeros(2000, dtype=torch.long))
    assert set(negatives.tolist()) == set(range(3, 20))  # user 0 trained on 0, 1, 2
    assert sampler.is_positive(torch.tensor([0, 1, 1]), torch.tensor([2, 3, 0])).tolist() == [True, True, False]


def _planted_split(seed: int = 0):
    interactions, item_ids, features = planted_interactions(seed=seed)
    users = [f"u{u}" for u in range(60)]
    split = split_interactions(
        interactions, item_ids, validation_users=users[:10], test_users=users[10:40], min_rating=4.0
    )
    return split, align_features(item_ids, item_ids, features)


@pytest.mark.parametrize("visual", [False, True])
def test_bpr_training_lowers_the_loss_and_raises_recall_on_a_planted_graph(visual: bool) -> None:
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    split, items = _planted_split()
    adjacency = MeanAdjacency(*edges_tensor(split.train_edges), split.n_users, split.n_items)
    torch.manual_seed(0)
    model = MMGCN(
        split.n_users, split.n_items, dim=16, latent_dim=16,
        item_features=torch.as_tensor(items.values) if visual else None,
    )  # fmt: skip
    model.eval()
    _, before = evaluate(model, adjacency, split, split.test, (10,))
    result = fit(
        model, adjacency, *edges_tensor(split.train_edges), epochs=25, batch_size=128, lr=0.01,
        reg_weight=1e-4, seed=0,
    )  # fmt: skip
    _, after = evaluate(model, adjacency, split, split.test, (10,))
    losses = [row["loss"] for row in result.curve]
    assert losses[-1] < 0.5 * losses[0]
    # 4 planted clusters of 20 items: a user's 2 held-out items are (90%) in their cluster,
    # so a model that learnt the clusters puts them in the top 10 far more often than chance (~10/80).
    assert before["recall@10"].mean() < 0.3
    assert after["recall@10"].mean() > 0.6
    assert after["recall@10"].mean() > before["recall@10"].mean() + 0.3


def test_validation_picks_the_kept_epoch() -> None:
    split, _ = _planted_split()
    adjacency = MeanAdjacency(*edges_tensor(split.train_edges), split.n_users, split.n_items)
    torch.manual_seed(0)
    model = MMGCN(split.n_users, split.n_items, dim=8)
    scripted = iter([0.1, 0.5, 0.2])  # the second validation (epoch 4) is the best

    def validate(_model):
        return {"recall@20": next(scripted)}

    states = {}

    def spy(_model):
        metrics = validate(_model)
        states[metrics["recall@20"]] = {k: v.clone() for k, v in _model.state_dict().items()}
        return metrics

    result = fit(
        model, adjacency, *edges_tensor(split.train_edges), epochs=6, batch_size=256, lr=0.01,
        reg_weight=0.0, seed=0, validate=spy, validate_every=2,
    )  # fmt: skip
    assert result.best_epoch == 4
    torch.testing.assert_close(model.state_dict()["id_embedding"], states[0.5]["id_embedding"])


def _visual_model(n_users=6, n_items=8, dim=8, user_mask=None, item_mask=None, seed=0):
    torch.manual_seed(seed)
    item_features = torch.randn(n_items, 5)
    user_features = torch.randn(n_users, 5)
    model = MMGCN(
        n_users, n_items, dim=dim, latent_dim=dim, item_features=item_features,
        item_mask=item_mask, user_features=user_features, user_mask=user_mask,
    )  # fmt: skip
    users = torch.tensor([0, 0, 1, 2, 3, 4, 5, 5])
    items = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    return model.eval(), MeanAdjacency(users, items, n_users, n_items)


def test_the_visual_branch_reads_item_and_user_features() -> None:
    user_mask = torch.tensor([True, True, True, True, True, False])
    item_mask = torch.tensor([True] * 7 + [False])
    model, adjacency = _visual_model(user_mask=user_mask, item_mask=item_mask)
    everyone = torch.arange(6)
    base = model.scores(adjacency, everyone)

    model.item_features[3] += 1.0  # a featured item's poster changes
    changed = model.scores(adjacency, everyone)
    assert not torch.allclose(changed[:, 3], base[:, 3])
    model.item_features[3] -= 1.0

    model.user_features[0] += 1.0  # a featured user's visual feature changes
    changed = model.scores(adjacency, everyone)
    assert not torch.allclose(changed[0], base[0])
    model.user_features[0] -= 1.0

    # A masked user's or item's feature is never read.
    model.user_features[5] += 100.0
    model.item_features[7] += 100.0
    torch.testing.assert_close(model.scores(adjacency, everyone), base)


def test_stored_features_of_masked_rows_are_zero() -> None:
    model, _ = _visual_model(user_mask=torch.tensor([False] * 6))
    assert torch.count_nonzero(model.user_features) == 0
    assert model.visual_inputs()[:6].abs().max() < 0.1  # users are their small free preference alone


def test_masked_nan_features_never_reach_the_loss() -> None:
    n_users, n_items = 6, 8
    item_features = torch.randn(n_items, 5)
    item_features[2] = float("nan")  # an item without a poster feature
    user_features = torch.randn(n_users, 5)
    user_features[1] = float("nan")  # a user without a history image
    user_features[4] = float("inf")
    torch.manual_seed(0)
    model = MMGCN(
        n_users, n_items, dim=8, latent_dim=8,
        item_features=item_features, item_mask=torch.isfinite(item_features).all(1),
        user_features=user_features, user_mask=torch.isfinite(user_features).all(1),
    )  # fmt: skip
    users = torch.tensor([0, 1, 1, 2, 3, 4, 5, 5])
    items = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    adjacency = MeanAdjacency(users, items, n_users, n_items)
    result = fit(model, adjacency, users, items, epochs=5, batch_size=4, lr=0.05, reg_weight=1e-3, seed=0)
    assert all(np.isfinite(row["loss"]) for row in result.curve)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.scores(adjacency, torch.arange(n_users))).all()


def test_unmasked_non_finite_features_are_refused() -> None:
    features = torch.randn(8, 5)
    features[3, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite but not masked"):
        MMGCN(6, 8, item_features=features)


def test_user_features_need_item_features() -> None:
    with pytest.raises(ValueError, match="need item visual features"):
        MMGCN(6, 8, user_features=torch.zeros(6, 5))
