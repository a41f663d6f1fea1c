"""A planted-signal bipartite graph: users and items in clusters, users like their cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_interactions(
    n_users: int = 60, n_items: int = 80, clusters: int = 4, per_user: int = 12, noise: float = 0.1, seed: int = 0
) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """An `Interactions` table where a user mostly picks items of their own cluster.

    Returns:
        (interactions, item ids, item features (I, clusters + 4)): the
        features are the item's cluster one-hot plus small noise, so the
        visual branch can read the planted signal.
    """
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % clusters
    rows = []
    for u in range(n_users):
        c = u % clusters
        own = np.flatnonzero(item_cluster == c)
        picks = []
        while len(picks) < per_user:
            pool = own if rng.random() > noise else np.arange(n_items)
            item = int(rng.choice(pool))
            if item not in picks:
                picks.append(item)
        rows += [
            {"user_id": f"u{u}", "item_id": f"i{i}", "timestamp": t, "rating": 5.0} for t, i in enumerate(picks)
        ]
    features = np.concatenate([np.eye(clusters)[item_cluster], rng.normal(0, 0.05, (n_items, 4))], axis=1)
    return pd.DataFrame(rows), [f"i{i}" for i in range(n_items)], features.astype(np.float32)
