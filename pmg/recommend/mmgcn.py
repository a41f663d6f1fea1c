"""MMGCN, the multimodal graph recommender of PMG's RQ5 (§4.6, Table 4), in plain torch.

Design after Wei, Wang, Nie, He, Hong, Chua, "MMGCN: Multi-modal Graph
Convolution Network for Personalized Recommendation of Micro-video", ACM MM
2019 (the authors' code: github.com/weiyinwei/MMGCN, `Model_MMGCN.py`):

* one graph convolution per modality over the same user-item bipartite graph;
  in modality `m` an item node starts from its feature, projected,
  `x_i = W_m f_i`, and a user node from a learnable preference vector `p_u`
  (both rows L2-normalised);
* each layer has an *aggregation* part, the mean of the neighbours' projected
  representations, `h = LeakyReLU(mean_{j ∈ N(v)} W_a x_j)` (eq. 1, `aggr_mode
  = mean`), and a *combination* part that mixes it with the node's own
  representation and its ID embedding `e_v` (shared by all modalities),
  `x̂ = LeakyReLU(W_l x) + e_v`, `x' = LeakyReLU(W_g h + x̂)` (eq. 5, the
  element-wise combination, `concat = False`);
* the final representation is the mean of the modalities' last layers; the
  score of (u, i) is their dot product; training minimises the BPR loss,
  `-log σ(s_ui - s_uj)` with one uniformly sampled negative `j` per observed
  pair, plus an L2 penalty on the batch's ID embeddings and preferences.

Why hand-written. No maintained package offers MMGCN for this torch (2.15):
RecBole and Cornac (PyPI) have no MMGCN; the authors' code pins torch 1.1 and
torch-geometric 1.2, and MMRec (a GitHub toolbox, not a package) builds on
`torch_geometric.nn.MessagePassing` with torch-scatter/torch-sparse
extensions, none of which is needed: with `mean` aggregation a layer's
message passing is one sparse product with the row-normalised adjacency
`D⁻¹A`, which `torch.sparse.mm` does. The whole model is ~150 lines here.

Where this differs from the authors' code, and why:

* *ID modality.* Table 4's "no image" setting has no modality at all, so the
  model always has an ID branch (a modality whose node inputs are the ID
  embeddings themselves) and the visual branch is added for the image
  settings. The settings are then nested (`no image ⊂ item images ⊂ item
  images + user feature`): each adds one input, nothing else changes.
* *User visual features* (the mean of the history posters, or the CLIP
  embedding of a PMG image). MMGCN's user preference vector is free; Table 4
  "initialises" it with an image feature. Here the user's visual input is
  `p_u + W_m f_u` with the item projection `W_m` (the feature is an image
  in the same CLIP space as the posters, so it is read like a poster), `p_u`
  starting near zero: at step 0 the user is their feature, and the L2 penalty
  on `p_u` keeps pulling them back to it — the feature is an initialisation
  and a prior at once. A user without a feature (mask 0) is `p_u` alone, as
  in MMGCN.
* *Missing features.* An item or user with mask 0 gets a zero input in the
  visual branch (the row L2 normalisation maps zero to zero, no NaN); it is
  still ranked through its ID embedding and its neighbours.
* A fixed number of layers (`layers`, the authors hard-code 3) and one width
  (`dim`) after the first layer; the visual input width is `latent_dim`.

Shapes: N = U + I nodes, users first (`0..U-1`), then items (`U..N-1`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.01  # F.leaky_relu's default, as in the authors' code


# ------------------------------------------------------------------- the graph


class MeanAdjacency:
    """The mean-aggregation operator `D⁻¹A` of the user-item graph, both directions.

    Message passing with `mean` aggregation is `D⁻¹A @ X`; its gradient is
    `(D⁻¹A)ᵀ @ G`. Both CSR matrices are built once, so a training step costs
    two sparse-dense products per layer and no index bookkeeping. Nodes
    without a neighbour aggregate to zero.

    Args:
        users: (E,) user index of every training edge.
        items: (E,) item index of every training edge.
        n_users: U.
        n_items: I.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> None:
        users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
        n = n_users + n_items
        rows = torch.cat([users, items + n_users])
        cols = torch.cat([items + n_users, users])
        # Duplicate edges count once: the graph is a set of (user, item) pairs.
        codes = torch.unique(rows * n + cols)
        rows, cols = codes // n, codes % n
        degree = torch.bincount(rows, minlength=n).clamp(min=1).float()
        values = 1.0 / degree[rows]
        matrix = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), values, (n, n), check_invariants=False  # built valid above
        ).coalesce()
        self.n_users, self.n_items, self.n_nodes = n_users, n_items, n
        self.n_edges = int(users.numel())
        with warnings.catch_warnings():  # "CSR support is in beta": sparse-dense mm is all we use
            warnings.simplefilter("ignore", UserWarning)
            self.forward_csr = matrix.to_sparse_csr()
            self.backward_csr = matrix.t().coalesce().to_sparse_csr()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`D⁻¹A @ x` for x (N, d), differentiable in x."""
        return _MeanAggregate.apply(x, self)


class _MeanAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, adjacency: MeanAdjacency) -> torch.Tensor:  # type: ignore[override]
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency.forward_csr, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return torch.sparse.mm(ctx.adjacency.backward_csr, grad), None


# ------------------------------------------------------------------- branches


class GraphLayer(nn.Module):
    """One MMGCN layer: aggregation (eq. 1) and element-wise combination (eq. 5).

    Args:
        in_dim: width of the incoming node representations.
        dim: width of the outgoing ones (= the ID embedding width).
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.aggregate = nn.Linear(in_dim, in_dim, bias=False)  # W_a, applied before the mean
        self.own = nn.Linear(in_dim, dim)  # W_l
        self.combine = nn.Linear(in_dim, dim)  # W_g
        for layer in (self.aggregate, self.own, self.combine):
            nn.init.xavier_normal_(layer.weight)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, adjacency: MeanAdjacency) -> torch.Tensor:
        """x (N, in_dim), ids (N, dim) -> (N, dim)."""
        h = F.leaky_relu(adjacency(self.aggregate(x)), LEAKY_SLOPE)
        x_hat = F.leaky_relu(self.own(x), LEAKY_SLOPE) + ids
        return F.leaky_relu(self.combine(h) + x_hat, LEAKY_SLOPE)


class ModalityBranch(nn.Module):
    """One modality's graph convolution, from its node inputs to (N, dim).

    Args:
        in_dim: width of the node inputs (the ID width for the ID branch,
            `latent_dim` for the visual one).
        dim: the ID embedding width, every layer's output width.
        layers: graph layers (>= 1).
    """

    def __init__(self, in_dim: int, dim: int, layers: int) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.layers = nn.ModuleList(GraphLayer(in_dim if i == 0 else dim, dim) for i in range(layers))

    def forward(self, x: torch.Tensor, ids: torch.Tensor, adjacency: MeanAdjacency) -> torch.Tensor:
        x = F.normalize(x, dim=1)  # zero rows (masked nodes) stay zero
        for layer in self.layers:
            x = layer(x, ids, adjacency)
        return x


class MMGCN(nn.Module):
    """MMGCN with an ID branch and an optional visual branch (see the module docstring).

    Args:
        n_users: U.
        n_items: I.
        dim: ID embedding width and every layer's output width.
        layers: graph layers per branch.
        item_features: (I, D) visual features of the items, or None for the
            ID-only model (Table 4 "no image").
        item_mask: (I,) bool, True where the item has a feature (default all).
        user_features: (U, D) visual features of the users (same space as
            the items'), or None (users start from a free preference).
        user_mask: (U,) bool, True where the user has a feature.
        latent_dim: width the visual features are projected to.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 64,
        layers: int = 2,
        item_features: torch.Tensor | None = None,
        item_mask: torch.Tensor | None = None,
        user_features: torch.Tensor | None = None,
        user_mask: torch.Tensor | None = None,
        latent_dim: int = 64,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users + n_items, dim)))
        self.id_branch = ModalityBranch(dim, dim, layers)
        self.visual = item_features is not None
        if user_features is not None and not self.visual:
            raise ValueError("user visual features need item visual features (the visual branch)")
        if self.visual:
            item_features = torch.as_tensor(item_features, dtype=torch.float32)
            if item_features.shape[0] != n_items:
                raise ValueError(f"item_features has {item_features.shape[0]} rows for {n_items} items")
            feature_dim = item_features.shape[1]
            item_mask = torch.ones(n_items, dtype=torch.bool) if item_mask is None else torch.as_tensor(item_mask)
            self.register_buffer("item_features", _masked(item_features, item_mask, "item"))
            self.register_buffer("item_mask", item_mask.bool())
            if user_features is None:
                user_features = torch.zeros(n_users, feature_dim)
                user_mask = torch.zeros(n_users, dtype=torch.bool)
            user_features = torch.as_tensor(user_features, dtype=torch.float32)
            if user_features.shape != (n_users, feature_dim):
                raise ValueError(
                    f"user_features has shape {tuple(user_features.shape)}; expected ({n_users}, {feature_dim})"
                )
            user_mask = torch.ones(n_users, dtype=torch.bool) if user_mask is None else torch.as_tensor(user_mask)
            self.register_buffer("user_features", _masked(user_features, user_mask, "user"))
            self.register_buffer("user_mask", user_mask.bool())
            self.project = nn.Linear(feature_dim, latent_dim)  # W_m, shared by items and user features
            nn.init.xavier_normal_(self.project.weight)
            # p_u: MMGCN's free user preference; near zero so that a user feature dominates at the start.
            self.preference = nn.Parameter(torch.randn(n_users, latent_dim) * 0.01)
            self.visual_branch = ModalityBranch(latent_dim, dim, layers)

    def visual_inputs(self) -> torch.Tensor:
        """(N, latent_dim) node inputs of the visual branch; masked rows get no feature."""
        items = self.project(self.item_features) * self.item_mask[:, None]
        users = self.preference + self.project(self.user_features) * self.user_mask[:, None]
        return torch.cat([users, items])

    def forward(self, adjacency: MeanAdjacency) -> torch.Tensor:
        """(N, dim) node representations: the mean of the branches' last layers."""
        ids = self.id_embedding
        out = self.id_branch(ids, ids, adjacency)
        if self.visual:
            out = (out + self.visual_branch(self.visual_inputs(), ids, adjacency)) / 2
        return out

    def scores(self, adjacency: MeanAdjacency, users: torch.Tensor) -> torch.Tensor:
        """(B, I) scores of the given users for every item."""
        rep = self.forward(adjacency)
        return rep[users] @ rep[self.n_users :].T

    def bpr_loss(
        self, adjacency: MeanAdjacency, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
        reg_weight: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BPR loss of a batch (B,), (B,), (B,) item indices, and the L2 penalty.

        Returns:
            (bpr, penalty), both scalars; the objective is their sum.
        """
        rep = self.forward(adjacency)
        u = rep[users]
        pos, neg = rep[self.n_users + positives], rep[self.n_users + negatives]
        bpr = -F.logsigmoid((u * pos).sum(1) - (u * neg).sum(1)).mean()
        rows = torch.cat([users, self.n_users + positives, self.n_users + negatives])
        penalty = self.id_embedding[rows].pow(2).sum(1).mean()
        if self.visual:
            penalty = penalty + self.preference[users].pow(2).sum(1).mean()
        return bpr, reg_weight * penalty


def _masked(features: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    """Features with masked rows zeroed; a non-finite unmasked row is an error, not a NaN later."""
    mask = torch.as_tensor(mask).bool()
    if mask.shape != (features.shape[0],):
        raise ValueError(f"{what} mask has shape {tuple(mask.shape)}; expected ({features.shape[0]},)")
    bad = mask & ~torch.isfinite(features).all(dim=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} {what} feature rows are not finite but not masked (first row {int(bad.nonzero()[0])})")
    return torch.where(mask[:, None], features, torch.zeros_like(features))


# -------------------------------------------------------------------- training


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        curve: one dict per epoch: `epoch`, `loss` (BPR + penalty, mean over
            the epoch's steps), `bpr`, `seconds`, and the validation metrics
            of the epochs where validation ran.
        best_epoch: the epoch whose state was kept (best validation
            `select_metric`; the last epoch without validation).
        edges_per_second: training pairs processed per second of training
            steps (forward, backward and update; validation excluded).
    """

    curve: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    edges_per_second: float = 0.0


class NegativeSampler:
    """Uniform negatives, resampled where they hit one of the user's training items.

    Args:
        users, items: (E,) the training edges.
        n_items: I.
        generator: the seeded torch generator.
        retries: resampling rounds; a negative still colliding after them is
            kept (only possible for a user who saw almost every item).
    """

    def __init__(
        self, users: torch.Tensor, items: torch.Tensor, n_items: int, generator: torch.Generator, retries: int = 8
    ) -> None:
        self.codes = torch.unique(users.long() * n_items + items.long())  # sorted
        self.n_items, self.generator, self.retries = n_items, generator, retries

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        negatives = torch.randint(0, self.n_items, users.shape, generator=self.generator)
        for _ in range(self.retries):
            hit = self.is_positive(users, negatives)
            if not hit.any():
                break
            negatives[hit] = torch.randint(0, self.n_items, (int(hit.sum()),), generator=self.generator)
        return negatives

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        codes = users.long() * self.n_items + items.long()
        where = torch.searchsorted(self.codes, codes).clamp(max=self.codes.numel() - 1)
        return self.codes[where] == codes


def fit(
    model: MMGCN,
    adjacency: MeanAdjacency,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    reg_weight: float,
    seed: int,
    validate: Callable[[MMGCN], dict[str, float]] | None = None,
    validate_every: int = 1,
    select_metric: str = "recall@20",
) -> FitResult:
    """Train with BPR (Adam), keeping the state with the best validation metric.

    Args:
        model: the model (changed in place; on return it holds the kept state).
        adjacency: the training graph.
        users, items: (E,) the training edges (the positives of BPR).
        epochs: passes over the training edges.
        batch_size: edges per step.
        lr: Adam's learning rate.
        reg_weight: weight of the L2 penalty.
        seed: seeds the edge order and the negatives (the initialisation is
            seeded by the caller, before the model is built).
        validate: model -> metrics of the validation users (`model` in eval
            mode, no gradient); None trains without validation.
        validate_every: validation every this many epochs (and after the last).
        select_metric: the validation metric that picks the kept state.

    Raises:
        FloatingPointError: the loss became NaN or infinite (never expected:
            inputs are checked, masked rows are zero), naming the epoch.
    """
    generator = torch.Generator().manual_seed(int(seed))
    sampler = NegativeSampler(users, items, model.n_items, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n_edges = int(users.numel())
    result = FitResult()
    best = -math.inf
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n_edges, generator=generator)
        total = bpr_total = 0.0
        steps = 0
        for start in range(0, n_edges, batch_size):
            batch = order[start : start + batch_size]
            batch_users, positives = users[batch], items[batch]
            negatives = sampler(batch_users)
            bpr, penalty = model.bpr_loss(adjacency, batch_users, positives, negatives, reg_weight)
            loss = bpr + penalty
            if not torch.isfinite(loss):
                raise FloatingPointError(f"MMGCN loss is {loss.item()} at epoch {epoch}, step {steps}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item()
            bpr_total += bpr.item()
            steps += 1
        seconds = time.perf_counter() - started
        train_seconds += seconds
        row: dict[str, float] = {
            "epoch": epoch, "loss": total / max(steps, 1), "bpr": bpr_total / max(steps, 1), "seconds": seconds,
        }
        if validate is not None and (epoch % validate_every == 0 or epoch == epochs):
            model.eval()
            with torch.no_grad():
                metrics = validate(model)
            row.update(metrics)
            if metrics[select_metric] > best:
                best, result.best_epoch = metrics[select_metric], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.curve.append(row)
    if validate is None:
        result.best_epoch = epochs
    else:
        model.load_state_dict(best_state)
    model.eval()
    result.edges_per_second = n_edges * epochs / train_seconds if train_seconds > 0 else 0.0
    return result


def edges_tensor(edges: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, 2) int array of (user, item) -> two (E,) long tensors."""
    edges = torch.as_tensor(np.asarray(edges, dtype=np.int64))
    return edges[:, 0].contiguous(), edges[:, 1].contiguous()


__all__ = ["MMGCN", "FitResult", "GraphLayer", "MeanAdjacency", "ModalityBranch", "NegativeSampler", "edges_tensor", "fit"]
