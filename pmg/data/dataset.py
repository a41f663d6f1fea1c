"""The canonical form of one scenario's data, and the per-user split.

Every source (real files or the default world) becomes a :class:`ScenarioData`:
validated tables plus counts of what was kept and what was skipped and why,
so a stage can report skips instead of crashing or dropping rows silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
from pydantic import Field, model_validator

from pmg import schemas
from pmg.errors import DataError
from pmg.frozen import Section


def empty_conversations() -> pd.DataFrame:
    """A conversations table with no rows (scenarios without conversations)."""
    return pd.DataFrame({"user_id": pd.Series(dtype=str), "turn": pd.Series(dtype=int), "text": pd.Series(dtype=str)})


@dataclass
class ScenarioData:
    """One scenario's tables, before the split.

    Attributes:
        scenario: `clothing`, `movies` or `emoji`.
        items: `schemas.Items`; `image_path` relative to the scenario folder
            (or null when the item has no image).
        interactions: `schemas.Interactions`.
        conversations: `schemas.Conversations` (may be empty).
        ground_truth: `schemas.GroundTruth` for simulated users, else None.
        skipped: reason -> number of rows/users/items skipped while loading.
    """

    scenario: str
    items: pd.DataFrame
    interactions: pd.DataFrame
    conversations: pd.DataFrame = field(default_factory=empty_conversations)
    ground_truth: pd.DataFrame | None = None
    skipped: Counter[str] = field(default_factory=Counter)


class UserSplitConfig(Section):
    """How users are split once into train / validation / test (evaluation protocol).

    A user's split is a function of (scenario, user id) alone — a hash, see
    `pmg.data.dataset.user_split_of` — so it never changes when users are
    added or removed and every stage agrees on it. Adapters train on
    `train` users, pick checkpoints on `validation` users, and every
    reported figure comes from `test` users; the mini zoo never trains on
    test users' target items (`pmg.zoo.pairs`).

    Attributes:
        validation: expected share of users in `validation`.
        test: expected share of users in `test`.
        min_users: `prepare` fails when `train` or `test` (or `validation`,
            when its share is above 0) ends up with fewer users than this.
    """

    validation: float = Field(default=0.15, ge=0, lt=1)
    test: float = Field(default=0.25, gt=0, lt=1)
    min_users: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _train_left(self) -> UserSplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError(
                f"validation + test must leave a share for train, got {self.validation} + {self.test} >= 1"
            )
        return self


def make_splits(
    data: ScenarioData,
    history_len: int,
    *,
    min_rating: float | None = None,
    require_image: bool = True,
    max_users: int | None = None,
    user_split: UserSplitConfig = UserSplitConfig(),
) -> tuple[pd.DataFrame, Counter[str]]:
    """Split each user's behaviour into history, target and supervision items.

    Follows the paper and the authors' code: a user's sequence is their
    interactions in time order (ties keep file order), keeping only ratings
    `>= min_rating` where ratings exist (MovieLens: 4) and only items with an
    image (POG: "the last clicked items with images"). A repeated item keeps
    its most recent position. From the last `history_len + 2` items of the
    sequence:

    * `history_items` = the first `history_len` of them (the behaviour the
      method reads; MovieLens 3, POG 5),
    * `target_item` = the next one (generated and evaluated),
    * `supervision_item` = the last item of the sequence, whose image
      supervises training of the soft preference embeddings.

    Keeping the supervision item apart from the target means training never
    sees the target image that evaluation compares against.

    Each user is also assigned once to `train`, `validation` or `test`
    (column `split`, see :func:`user_split_of`); :func:`check_user_splits`
    enforces the minimum sizes.

    Args:
        data: the scenario's tables.
        history_len: number of history items per user.
        min_rating: drop interactions rated below this (null ratings are kept).
        require_image: drop items without an image from sequences.
        max_users: keep the first `max_users` eligible users by id.
        user_split: shares of the train / validation / test users.

    Returns:
        The `schemas.Splits` table (validated) and reason -> count of users
        skipped.
    """
    skipped: Counter[str] = Counter()
    inter = data.interactions
    if min_rating is not None:
        inter = inter[inter["rating"].isna() | (inter["rating"] >= min_rating)]
    if require_image:
        with_image = set(data.items.loc[data.items["image_path"].notna(), "item_id"])
        inter = inter[inter["item_id"].isin(with_image)]
    known_users = set(data.interactions["user_id"])
    # Stable sort keeps file order among equal timestamps.
    inter = inter.reset_index(drop=True).reset_index(names="_order")
    inter = inter.sort_values(["user_id", "timestamp", "_order"], kind="stable")
    need = history_len + 2
    rows = []
    for user_id, group in inter.groupby("user_id", sort=True):
        sequence = list(dict.fromkeys(reversed(group["item_id"].tolist())))[::-1]
        if len(sequence) < need:
            skipped["too_few_interactions"] += 1
            continue
        window = sequence[-need:]
        rows.append(
            {
                "user_id": str(user_id),
                "scenario": data.scenario,
                "history_items": json.dumps(window[:history_len]),
                "target_item": window[-2],
                "supervision_item": window[-1],
                "split": user_split_of(data.scenario, str(user_id), user_split),
            }
        )
    skipped["too_few_interactions"] += len(known_users - set(inter["user_id"]))
    if max_users is not None and len(rows) > max_users:
        skipped["over_max_users"] += len(rows) - max_users
        rows = rows[:max_users]
    frame = pd.DataFrame(rows, columns=list(schemas.Splits.to_schema().columns))
    frame = schemas.Splits.validate(frame)
    return frame, +skipped


USER_SPLITS = schemas.USER_SPLITS
"""The user splits, in the order they are reported: `train`, `validation`, `test`."""


def user_split_of(scenario: str, user_id: str, cfg: UserSplitConfig) -> str:
    """The split of one user: `test`, `validation` or `train`, by a hash of (scenario, user id).

    The hash (SHA-256 of `"user", scenario, user id`, read as a number in
    [0, 1)) depends on nothing else, so a user keeps their split when users
    are added or removed, when `max_users` changes, and in every stage that
    reads the table. The `"user"` tag keeps it independent of the item hash
    of `pmg.zoo.pairs` (MovieLens users and items share numeric ids). The
    first `cfg.test` of [0, 1) is `test`, the next `cfg.validation` is
    `validation`, the rest `train`: the shares are expectations, so a
    scenario with few users can come out uneven (see
    :func:`check_user_splits`).
    """
    digest = hashlib.sha256(f"user\0{scenario}\0{user_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.validation:
        return "validation"
    return "train"


def users_in_split(splits: pd.DataFrame, *names: str) -> set[str]:
    """The ids (as strings) of the users in any of the splits `names` (`train`, `validation`, `test`)."""
    unknown = set(names) - set(USER_SPLITS)
    if unknown:
        raise ValueError(f"unknown user split(s) {sorted(unknown)}; known: {list(USER_SPLITS)}")
    return set(splits.loc[splits["split"].isin(names), "user_id"].astype(str))


def evaluated_rows(
    table: pd.DataFrame, splits: pd.DataFrame, scenario: str, *, where: object = "<keywords>"
) -> pd.DataFrame:
    """The rows of `table` (a `user_id` column) whose user is a test user: what every reported figure uses.

    Raises:
        DataError: none of the table's users is a test user (naming the scenario).
    """
    keep = table["user_id"].astype(str).isin(users_in_split(splits, "test"))
    if not keep.any():
        raise DataError(
            where,
            f"{scenario}: none of its {table['user_id'].nunique()} users is a test user; "
            "nothing can be reported (describe the test users: describe.max_test_users)"
        )
    return table.loc[keep].reset_index(drop=True)


def split_counts(splits: pd.DataFrame) -> Counter[str]:
    """`users_train`, `users_validation`, `users_test`: users per split (zeros included), for reports."""
    counts = splits["split"].value_counts()
    return Counter({f"users_{name}": int(counts.get(name, 0)) for name in USER_SPLITS})


def check_user_splits(
    splits: pd.DataFrame, scenario: str, cfg: UserSplitConfig, *, where: object = "<splits>"
) -> None:
    """Fail when a split the protocol needs has too few users.

    `train` (the adapters learn from it) and `test` (every reported figure
    comes from it) need at least `cfg.min_users` users. `validation` only
    picks checkpoints: it needs them too when its share is above 0, and may
    be empty when `cfg.validation` is 0.

    Raises:
        DataError: naming the scenario, the split, its count and the
            settings to change.
    """
    counts = split_counts(splits)
    needed = ["train", "test"] + (["validation"] if cfg.validation > 0 else [])
    for name in needed:
        n = counts[f"users_{name}"]
        if n < cfg.min_users:
            raise DataError(
                where,
                f"scenario {scenario!r}: split {name!r} has {n} user(s) of {len(splits)}, fewer than "
                f"prepare.user_split.min_users = {cfg.min_users} (shares: test {cfg.test}, validation "
                f"{cfg.validation}); add users or change prepare.user_split",
                column="split",
            )
