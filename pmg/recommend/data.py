"""The data of the recommendation experiment (PMG §4.6, Table 4), as pure functions.

Four settings, one model (`pmg.recommend.mmgcn.MMGCN`), one graph; they
differ only in the visual inputs:

* `no_image`: IDs only (the ID branch);
* `item_image`: plus the items' poster features (CLIP image embeddings from
  the profile's scorer) in a visual branch;
* `mean_user`: plus, per user, the mean of their history posters' features;
* `generated_user`: plus, per user, the CLIP image embedding of a PMG image
  generated from the preference condition only (`w_t = 0`, no target; see
  `pmg.method.preference_image`).

Interactions (decision). Behaviour is implicit feedback: the positives are
the interactions rated `>= min_rating` (unrated ones count; MovieLens: 4, as
in PMG's split), in time order, a repeated item keeping its latest position
(the same sequence `pmg.data.dataset.make_splits` builds). The users are
split by the caller (the project's train / validation / test split of users,
by hash): the positives of every user not in the validation or test set are
training edges; a validation or test user's *last `holdout_last` positives*
are held out, the earlier ones are training edges. With the default
`holdout_last = 2` the held-out items are exactly the items after PMG's
history window (the split's target and supervision items), so the history
the user features are read from is never held out — `check_no_leak` makes
sure. Validation users pick the training epoch; every reported figure comes
from test users. Ranking is over every catalogue item the user did not train
on, held-out items of other users included (`pmg.recommend.metrics`).

Bad input, by stated rule (counted in `InteractionSplit.counts` and
`FeatureTable.missing`, never a NaN):

* an evaluated user with fewer than `holdout_last + 1` positives cannot both
  train and be tested: they are dropped from evaluation and their positives
  kept as training edges;
* an interaction naming an item outside the catalogue is dropped;
* an item with no poster feature, a user with no history feature (no history
  item has a feature) or no generated image, and a non-finite feature row,
  get a zero feature and mask 0 (`MMGCN` treats them as feature-less);
* the two user-feature settings feature the same users: when both are run,
  a user gets a feature only where both sources have one
  (`common_user_mask`), so "generated vs mean" compares the feature alone;
* a missing or malformed feature file is a `DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pmg.errors import DataError
from pmg.text import natural_key
from pmg.schemas import RECOMMEND_SETTINGS

SETTINGS = RECOMMEND_SETTINGS  # ("no_image", "item_image", "mean_user", "generated_user")
SETTING_LABELS = {
    "no_image": "no image",
    "item_image": "item images only",
    "mean_user": "item images + mean user",
    "generated_user": "item images + generated user",
}


# ----------------------------------------------------------------- interactions


@dataclass(frozen=True)
class InteractionSplit:
    """The recommendation graph and its held-out items.

    Attributes:
        user_ids: (U,) user ids; index = the user's row in every array.
        item_ids: (I,) the whole catalogue; index = the item's column.
        train_edges: (E, 2) int64 (user index, item index), unique pairs.
        validation: user index -> held-out item indices (validation users).
        test: user index -> held-out item indices (test users).
        counts: what was kept and dropped, by reason.
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    train_edges: np.ndarray
    validation: dict[int, np.ndarray]
    test: dict[int, np.ndarray]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def seen(self, users: Sequence[int]) -> list[np.ndarray]:
        """The training item indices of each given user (masked when ranking)."""
        order = np.argsort(self.train_edges[:, 0], kind="stable")
        edges = self.train_edges[order]
        starts = np.searchsorted(edges[:, 0], users, side="left")
        ends = np.searchsorted(edges[:, 0], users, side="right")
        return [edges[s:e, 1] for s, e in zip(starts, ends)]


def hash_share(user: str) -> float:
    """A user's position in [0, 1): the first 8 bytes of sha256(user id), stable across runs and user sets."""
    return int.from_bytes(hashlib.sha256(str(user).encode()).digest()[:8], "big") / 2**64


def hash_user_split(
    users: Sequence[str], *, validation_fraction: float, test_fraction: float
) -> tuple[list[str], list[str]]:
    """Validation and test users by hash: share < validation_fraction, then the next test_fraction.

    The project has no user-level split of its own yet (`prepare` splits each
    user's sequence, not the users), so the recommender holds users out by
    the hash of their id: a user's side never depends on which other users
    are present (a larger world keeps the smaller one's assignments).

    Raises:
        ValueError: fractions outside [0, 1) or summing to 1 or more.
    """
    if not (0 <= validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise ValueError(
            f"fractions must be in [0, 1) and sum below 1, got validation {validation_fraction}, test {test_fraction}"
        )
    shares = {u: hash_share(u) for u in users}
    validation = [u for u in users if shares[u] < validation_fraction]
    test = [u for u in users if validation_fraction <= shares[u] < validation_fraction + test_fraction]
    return validation, test


def positive_sequences(interactions: pd.DataFrame, min_rating: float | None) -> dict[str, list[str]]:
    """Each user's positives in time order, a repeated item at its latest position.

    Args:
        interactions: a `schemas.Interactions` table.
        min_rating: ratings below are not positives (null ratings are kept);
            None keeps every interaction.
    """
    inter = interactions
    if min_rating is not None:
        inter = inter[inter["rating"].isna() | (inter["rating"] >= min_rating)]
    inter = inter.reset_index(drop=True).reset_index(names="_order")
    inter = inter.sort_values(["user_id", "timestamp", "_order"], kind="stable")
    return {
        str(user): list(dict.fromkeys(reversed(group["item_id"].astype(str).tolist())))[::-1]
        for user, group in inter.groupby("user_id", sort=False)
    }


def split_interactions(
    interactions: pd.DataFrame,
    item_ids: Sequence[str],
    *,
    validation_users: Collection[str],
    test_users: Collection[str],
    min_rating: float | None,
    holdout_last: int = 2,
    max_users: int | None = None,
) -> InteractionSplit:
    """Build the training graph and hold out the evaluated users' last positives.

    Args:
        interactions: a `schemas.Interactions` table.
        item_ids: the catalogue (every item is ranked, interactions or not).
        validation_users: users whose held-out items pick the epoch.
        test_users: users whose held-out items are reported.
        min_rating: the positive threshold (see `positive_sequences`).
        holdout_last: positives held out per evaluated user (>= 1).
        max_users: keep the first `max_users` users by id (natural order)
            before anything else; None keeps all.

    Raises:
        ValueError: overlapping user sets, or `holdout_last < 1`.
    """
    validation_users, test_users = {str(u) for u in validation_users}, {str(u) for u in test_users}
    overlap = validation_users & test_users
    if overlap:
        raise ValueError(f"{len(overlap)} users are both validation and test users, e.g. {sorted(overlap)[:3]}")
    if holdout_last < 1:
        raise ValueError(f"holdout_last must be >= 1, got {holdout_last}")
    item_ids = tuple(str(i) for i in item_ids)
    item_index = {item: i for i, item in enumerate(item_ids)}
    counts: dict[str, int] = {}

    def count(reason: str, n: int = 1) -> None:
        counts[reason] = counts.get(reason, 0) + n

    sequences = positive_sequences(interactions, min_rating)
    users = sorted(sequences, key=natural_key)
    if max_users is not None and len(users) > max_users:
        count("users_over_max_users", len(users) - max_users)
        users = users[:max_users]
    edges: list[tuple[int, int]] = []
    held: dict[str, dict[int, np.ndarray]] = {"validation": {}, "test": {}}
    kept_users: list[str] = []
    for user in users:
        sequence = [item_index[i] for i in sequences[user] if i in item_index]
        count("interactions_unknown_item", len(sequences[user]) - len(sequence))
        if not sequence:
            count("users_without_positives")
            continue
        u = len(kept_users)
        kept_users.append(user)
        role = "validation" if user in validation_users else "test" if user in test_users else "train"
        if role != "train":
            if len(sequence) <= holdout_last:
                count(f"{role}_users_too_few_positives")
            else:
                held[role][u] = np.asarray(sequence[-holdout_last:], dtype=np.int64)
                sequence = sequence[:-holdout_last]
        edges.extend((u, i) for i in sequence)
    train_edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    counts.update(
        users=len(kept_users),
        items=len(item_ids),
        train_edges=len(train_edges),
        validation_users=len(held["validation"]),
        test_users=len(held["test"]),
        items_without_training_edge=len(item_ids) - len(np.unique(train_edges[:, 1])),
        validation_users_not_in_interactions=len(validation_users - set(kept_users)),
        test_users_not_in_interactions=len(test_users - set(kept_users)),
    )
    return InteractionSplit(tuple(kept_users), item_ids, train_edges, held["validation"], held["test"], counts)


# --------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureTable:
    """Features aligned to a list of ids, with a mask for the missing ones.

    Attributes:
        values: (N, D) float32; rows with mask 0 are zero.
        mask: (N,) bool, True where the id has a finite feature.
        missing: the ids with mask 0, by reason (`absent`, `nonfinite`,
            `no_history_feature`, ...).
    """

    values: np.ndarray
    mask: np.ndarray
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def counts(self) -> dict[str, int]:
        """How many ids have a feature, and how many lack one per reason."""
        return {"with_feature": int(self.mask.sum()), **{k: len(v) for k, v in self.missing.items()}}


def align_features(ids: Sequence[str], feature_ids: Sequence[str], features: np.ndarray) -> FeatureTable:
    """Rows of `features` reordered to `ids`; ids without a (finite) row get zero and mask 0.

    Args:
        ids: the ids the model indexes (users or items).
        feature_ids: (M,) the ids of the feature rows.
        features: (M, D) the features.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != len(feature_ids):
        raise ValueError(f"features must be ({len(feature_ids)}, D); got {features.shape}")
    row_of = {str(f): r for r, f in enumerate(feature_ids)}
    values = np.zeros((len(ids), features.shape[1]), dtype=np.float32)
    mask = np.zeros(len(ids), dtype=bool)
    absent, nonfinite = [], []
    for n, key in enumerate(ids):
        r = row_of.get(str(key))
        if r is None:
            absent.append(str(key))
        elif not np.isfinite(features[r]).all():
            nonfinite.append(str(key))
        else:
            values[n], mask[n] = features[r], True
    missing = {k: tuple(v) for k, v in (("absent", absent), ("nonfinite", nonfinite)) if v}
    return FeatureTable(values, mask, missing)


def history_items(splits: pd.DataFrame) -> dict[str, list[str]]:
    """User -> history item ids (oldest first) from a `schemas.Splits` table."""
    return {str(u): list(json.loads(h)) for u, h in zip(splits["user_id"], splits["history_items"])}


def mean_history_features(
    user_ids: Sequence[str], history: Mapping[str, Sequence[str]], items: Sequence[str], item_features: FeatureTable
) -> FeatureTable:
    """Each user's visual feature as the mean of their history items' features (Table 4 "mean user").

    Only history items with a feature count. A user with no such item (or no
    history) gets mask 0 (`no_history_feature`).

    Args:
        user_ids: the users, in model order.
        history: user -> history item ids (`history_items`).
        items: the item ids, in `item_features` order.
        item_features: the items' features.
    """
    index = {item: n for n, item in enumerate(items)}
    values = np.zeros((len(user_ids), item_features.dim), dtype=np.float32)
    mask = np.zeros(len(user_ids), dtype=bool)
    lacking = []
    for n, user in enumerate(user_ids):
        rows = [index[i] for i in history.get(str(user), ()) if i in index and item_features.mask[index[i]]]
        if rows:
            values[n], mask[n] = item_features.values[rows].mean(axis=0), True
        else:
            lacking.append(str(user))
    return FeatureTable(values, mask, {"no_history_feature": tuple(lacking)} if lacking else {})


def common_user_mask(*tables: FeatureTable) -> np.ndarray:
    """Users featured in every table: the user-feature settings compare on the same users."""
    mask = np.ones_like(tables[0].mask)
    for table in tables:
        mask &= table.mask
    return mask


def restrict(table: FeatureTable, mask: np.ndarray, ids: Sequence[str], reason: str) -> FeatureTable:
    """`table` with rows outside `mask` zeroed and masked, recorded under `reason`."""
    dropped = table.mask & ~mask
    values = np.where(mask[:, None], table.values, 0).astype(np.float32)
    missing = dict(table.missing)
    if dropped.any():
        missing[reason] = tuple(str(ids[n]) for n in np.flatnonzero(dropped))
    return FeatureTable(values, table.mask & mask, missing)


def check_no_leak(split: InteractionSplit, history: Mapping[str, Sequence[str]]) -> None:
    """Refuse user features read from items the same user has held out.

    Raises:
        ValueError: naming the first user whose history (the user feature's
            source) holds one of their held-out items.
    """
    for held in (split.validation, split.test):
        for u, items in held.items():
            user = split.user_ids[u]
            leaked = {split.item_ids[i] for i in items} & set(history.get(user, ()))
            if leaked:
                raise ValueError(
                    f"user {user!r}: held-out items {sorted(leaked)} are in the history the user feature is "
                    f"read from; lower recommend.holdout_last to the items after the history window"
                )


@dataclass(frozen=True)
class SettingInputs:
    """The visual inputs of one Table-4 setting.

    Attributes:
        setting: one of `SETTINGS`.
        item_features: (I, D) or None (`no_image`).
        item_mask: (I,) bool or None.
        user_features: (U, D) or None (no user feature).
        user_mask: (U,) bool or None.
        counts: featured and missing ids, for the metrics.
    """

    setting: str
    item_features: np.ndarray | None = None
    item_mask: np.ndarray | None = None
    user_features: np.ndarray | None = None
    user_mask: np.ndarray | None = None
    counts: dict[str, int] = field(default_factory=dict)


def setting_inputs(
    setting: str,
    *,
    item_features: FeatureTable | None = None,
    mean_user: FeatureTable | None = None,
    generated_user: FeatureTable | None = None,
) -> SettingInputs:
    """The inputs of `setting` from the aligned feature tables it needs.

    Raises:
        ValueError: an unknown setting, or a table the setting needs is None.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {list(SETTINGS)}")
    if setting == "no_image":
        return SettingInputs(setting)
    if item_features is None:
        raise ValueError(f"setting {setting!r} needs the item (poster) features")
    counts = {f"items_{k}": v for k, v in item_features.counts().items()}
    user = {"item_image": None, "mean_user": mean_user, "generated_user": generated_user}[setting]
    if setting != "item_image" and user is None:
        raise ValueError(f"setting {setting!r} needs its user features")
    if user is None:
        return SettingInputs(setting, item_features.values, item_features.mask, counts=counts)
    counts.update({f"users_{k}": v for k, v in user.counts().items()})
    return SettingInputs(setting, item_features.values, item_features.mask, user.values, user.mask, counts)


__all__ = [
    "SETTINGS",
    "SETTING_LABELS",
    "FeatureTable",
    "InteractionSplit",
    "SettingInputs",
    "align_features",
    "check_no_leak",
    "common_user_mask",
    "hash_share",
    "hash_user_split",
    "history_items",
    "mean_history_features",
    "positive_sequences",
    "restrict",
    "setting_inputs",
    "split_interactions",
]
