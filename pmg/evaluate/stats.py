"""Statistics of the evaluation protocol: mismatched-user control, permutation test, paired bootstrap.

Pure numpy functions of already-measured numbers; every random draw comes from
`numpy.random.default_rng(seed)`, so a result is a function of its inputs and
its seed. The evaluation stages measure LPIPS / SSIM and call these.

Mismatched-user control
-----------------------
Personalisation means an output is closer to *its own user's* history than to
another user's. :func:`derangement` fixes, once per scenario and seed, a
partner for every test user (never the user themself); each output is also
measured against the partner's history. The **personalisation gap** of a
variant is `mean(other) - mean(own)` for a distance (LPIPS: positive = the own
history is closer), or `mean(own) - mean(other)` for a similarity (SSIM), so
that a positive gap always means "personalised". A selection rule or a
generator that makes every output closer to *all* histories alike (e.g. by
drawing them towards the catalogue's average look) moves `own` and `other`
together and leaves the gap at zero: the gap separates personalisation from
luck in the selection.

:func:`personalisation_gap` tests it with a permutation test. Under the null
hypothesis "the output does not depend on whose history it was made from",
which history belongs to which output is exchangeable; the test draws
`permutations` random assignments `sigma` of histories to outputs, recomputes
the gap with user `i`'s own history `sigma(i)` and other history
`sigma(partner(i))`, and reports the one-sided p-value with the +1 correction
(Phipson & Smyth 2010), `(1 + #{gap_sigma >= gap}) / (1 + permutations)`,
which is never 0 and is exact (valid) for any number of permutations. It needs
the metric of every output against every test user's history (an `(n, n)`
matrix; evaluation caches the history images' trunk features, so the extra
`n - 1` columns cost the LPIPS head, not the network).

Paired differences
------------------
Variants are compared with another (`none`, `keywords`) per test user, on the
same targets and the same generation seeds: :func:`paired_difference` averages
each user's `variant - reference` over the seeds first, then gives the mean
over users with a percentile bootstrap interval over users (>= 1000
resamples). **Seeds are not resampled**: each user's mean over seeds already
carries the seed noise into the spread of the user means, and resampling the
seeds inside each resampled user as well would count the within-user variance
twice (Davison & Hinkley 1997, §3.8; the two-stage bootstrap is
conservative). With `S` seeds the interval therefore covers users and seeds
together, as the protocol asks.

"Personalises more than `none`" is a paired question too: :func:`user_gaps`
gives each test user's own gap (per seed), and :func:`paired_difference` of
a variant's user gaps against `none`'s gives the interval of the difference.

:func:`paired_arrays` turns a long table (one row per variant, user, seed)
into the aligned arrays and fails, naming the variant, when a run is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pmg.errors import DataError

MIN_PERMUTATIONS = 1000
MIN_RESAMPLES = 1000
"""The protocol's floor (issue 11); the functions accept fewer (tests), the stages must not."""


# ------------------------------------------------------------ mismatched users


def derangement(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of `range(n)` with no fixed point, fixed by `seed`.

    Drawn by rejection (a uniform permutation is a derangement with
    probability ~1/e, so ~2.7 draws on average), which keeps every
    derangement equally likely (Sattolo's algorithm would only give
    single cycles).

    Args:
        n: number of test users, at least 2.
        seed: the control's seed.

    Returns:
        (n,) int array `p` with `p[i] != i`: user `i`'s partner is user `p[i]`.

    Raises:
        ValueError: `n < 2` (one user has nobody to be mismatched with).
    """
    if n < 2:
        raise ValueError(f"a mismatched-user control needs at least 2 test users, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def mismatched_users(users: Sequence[str], seed: int) -> dict[str, str]:
    """Each test user's partner (another test user), by a seeded derangement of the sorted ids.

    The users are sorted first, so the pairing depends on the set of users
    and the seed, not on the order they come in.
    """
    ordered = sorted({str(u) for u in users})
    if len(ordered) != len(users):
        raise ValueError(f"user ids must be distinct, got {len(users)} ids of which {len(ordered)} distinct")
    perm = derangement(len(ordered), seed)
    return {user: ordered[perm[i]] for i, user in enumerate(ordered)}


# ---------------------------------------------------------- personalisation gap


@dataclass(frozen=True)
class GapResult:
    """A variant's personalisation gap and its permutation test.

    Attributes:
        gap: `other - own` (distances) or `own - other` (similarities);
            positive = personalised.
        own: mean metric of the outputs against their own user's history.
        other: mean metric against the partner's history.
        p_value: one-sided permutation p-value of `gap > 0`, +1-corrected.
        null_mean: mean gap over the permutations (about 0).
        permutations: number of random assignments drawn.
        n_users: number of test users (outputs).
        seed: the permutation seed.
    """

    gap: float
    own: float
    other: float
    p_value: float
    null_mean: float
    permutations: int
    n_users: int
    seed: int

    def to_dict(self) -> dict:
        """JSON-ready values (rounded to 6 decimals)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def personalisation_gap(
    metric: np.ndarray,
    partner: np.ndarray | Sequence[int],
    *,
    lower_is_closer: bool = True,
    permutations: int = MIN_PERMUTATIONS,
    seed: int = 0,
) -> GapResult:
    """The personalisation gap of one variant, with a permutation test (module docstring).

    Args:
        metric: (n, n) or (S, n, n): `metric[..., i, j]` is the metric of user
            `i`'s output against user `j`'s history (mean over `j`'s history
            images); a leading axis of generation seeds is averaged first.
        partner: (n,) the derangement (`partner[i] != i`).
        lower_is_closer: True for a distance (LPIPS), False for a
            similarity (SSIM).
        permutations: random assignments of histories to outputs.
        seed: seed of the permutations.

    Returns:
        The gap, its parts and its p-value.

    Raises:
        ValueError: a non-square or non-finite matrix, or a partner array
            that is not a derangement of its rows.
    """
    values = np.asarray(metric, dtype=np.float64)
    if values.ndim == 3:
        values = values.mean(axis=0)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"metric must be (n, n) or (S, n, n), got shape {np.shape(metric)}")
    if not np.isfinite(values).all():
        raise ValueError("metric has NaN or infinite entries (a missing measurement?)")
    n = values.shape[0]
    partner = np.asarray(partner, dtype=np.int64)
    if partner.shape != (n,) or sorted(partner.tolist()) != list(range(n)) or (partner == np.arange(n)).any():
        raise ValueError(f"partner must be a derangement of range({n}), got {partner.tolist()}")
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    sign = 1.0 if lower_is_closer else -1.0
    rows = np.arange(n)

    def gaps(sigma: np.ndarray) -> np.ndarray:
        # sigma (B, n): output i's own history is sigma[:, i], its other history sigma[:, partner[i]].
        own = values[rows, sigma].mean(axis=-1)
        other = values[rows, sigma[:, partner]].mean(axis=-1)
        return sign * (other - own)

    identity = rows[None, :]
    own, other = values[rows, rows].mean(), values[rows, partner].mean()
    observed = float(gaps(identity)[0])
    rng = np.random.default_rng(seed)
    sigma = np.argsort(rng.random((permutations, n)), axis=1)  # (B, n) uniform permutations
    null = gaps(sigma)
    # A tolerance so that a permutation equal to the observed assignment counts as ">=" despite rounding.
    exceed = int((null >= observed - 1e-12).sum())
    return GapResult(
        gap=observed,
        own=float(own),
        other=float(other),
        p_value=(1 + exceed) / (1 + permutations),
        null_mean=float(null.mean()),
        permutations=int(permutations),
        n_users=int(n),
        seed=int(seed),
    )


def user_gaps(
    metric: np.ndarray, partner: np.ndarray | Sequence[int], *, lower_is_closer: bool = True
) -> np.ndarray:
    """Each user's personalisation gap: `other - own` (distances) or `own - other` (similarities).

    Args:
        metric: (n, n) or (S, n, n), as in :func:`personalisation_gap`.
        partner: (n,) the derangement.
        lower_is_closer: True for a distance, False for a similarity.

    Returns:
        (n,) or, with seeds, (n, S) — ready for :func:`paired_difference`;
        its mean is the gap :func:`personalisation_gap` reports.
    """
    values = np.asarray(metric, dtype=np.float64)
    partner = np.asarray(partner, dtype=np.int64)
    rows = np.arange(values.shape[-1])
    gaps = values[..., rows, partner] - values[..., rows, rows]  # (n,) or (S, n)
    gaps = gaps if lower_is_closer else -gaps
    return gaps.T if gaps.ndim == 2 else gaps


# --------------------------------------------------------- paired differences


@dataclass(frozen=True)
class Interval:
    """A mean over test users with its percentile bootstrap interval.

    Attributes:
        mean: the point estimate (mean over users of the per-user values).
        low, high: the interval's ends.
        confidence: its nominal level (0.95).
        n_users: users resampled.
        n_seeds: generation seeds averaged within each user first.
        resamples: bootstrap resamples over users (seeds are not resampled).
        seed: the bootstrap seed.
    """

    mean: float
    low: float
    high: float
    confidence: float
    n_users: int
    n_seeds: int
    resamples: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        """JSON-ready values (rounded to 6 decimals)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def bootstrap_interval(
    per_user: np.ndarray | Sequence[float],
    *,
    n_seeds: int = 1,
    resamples: int = MIN_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of per-user values with a percentile bootstrap interval over users.

    Args:
        per_user: (n,) one value per user (already averaged over seeds).
        n_seeds: how many seeds each value averages (recorded only).
        resamples: bootstrap resamples of the users, with replacement.
        confidence: nominal coverage, in (0, 1).
        seed: seed of the resampling.

    Raises:
        ValueError: fewer than 2 users, a non-finite value, or a bad level.
    """
    x = np.asarray(per_user, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 users' values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("per-user values have NaN or infinite entries (a missing run?)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(
        mean=float(x.mean()),
        low=float(low),
        high=float(high),
        confidence=float(confidence),
        n_users=int(x.size),
        n_seeds=int(n_seeds),
        resamples=int(resamples),
        seed=int(seed),
    )


def paired_difference(
    values: np.ndarray,
    reference: np.ndarray,
    *,
    resamples: int = MIN_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """`variant - reference`, paired per test user (and seed), with a bootstrap interval over users.

    Args:
        values: (n,) or (n, S): the variant's metric per user (and seed).
        reference: the same shape: the reference variant's metric for the
            same users, targets and seeds.
        resamples, confidence, seed: as in :func:`bootstrap_interval`.

    Returns:
        The mean paired difference and its interval (module docstring:
        seeds are averaged within each user, users are resampled).

    Raises:
        ValueError: the shapes differ (the runs are not paired).
    """
    v = np.asarray(values, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if v.shape != r.shape or v.ndim not in (1, 2):
        raise ValueError(f"values and reference must share an (n,) or (n, S) shape: {v.shape}, {r.shape}")
    diff = v - r
    per_user = diff.mean(axis=1) if diff.ndim == 2 else diff
    return bootstrap_interval(
        per_user,
        n_seeds=diff.shape[1] if diff.ndim == 2 else 1,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
    )


def paired_arrays(
    frame: pd.DataFrame,
    variant: str,
    reference: str,
    value: str,
    *,
    where: object = "<metrics>",
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Align one metric of two variants per (user, seed), for :func:`paired_difference`.

    Args:
        frame: long table with columns `variant`, `user_id`, `seed` and
            `value`, one row per (variant, user, seed) (e.g. an output's
            mean LPIPS to its history).
        variant: the variant compared.
        reference: the variant it is compared with (`none`, `keywords`).
        value: the metric column.
        where: what to name in an error (the table's file).

    Returns:
        The user ids (sorted), and (n, S) arrays of the variant and the
        reference, rows in user order, columns in seed order.

    Raises:
        DataError: a variant has no rows, a (user, seed) of one variant is
            missing from the other or measured twice, or a value is missing
            — naming the variant and the first missing user and seed.
    """
    pivots = {}
    for name in (variant, reference):
        part = frame[frame["variant"] == name]
        if part.empty:
            raise DataError(
                where, f"variant {name!r} has no {value!r} rows: its run is missing", column="variant"
            )
        duplicated = part.duplicated(["user_id", "seed"])
        if duplicated.any():
            row = part[duplicated].iloc[0]
            raise DataError(
                where,
                f"variant {name!r}: user {row['user_id']!r} seed {row['seed']} is measured twice",
                column="user_id",
            )
        pivots[name] = part.pivot(index="user_id", columns="seed", values=value)
    keys = {
        name: {(u, s) for u in p.index for s in p.columns if pd.notna(p.loc[u, s])}
        for name, p in pivots.items()
    }
    for name, other in ((variant, reference), (reference, variant)):
        missing = sorted(keys[other] - keys[name], key=str)
        if missing:
            user, seed = missing[0]
            raise DataError(
                where,
                f"variant {name!r} is missing {len(missing)} run(s) that {other!r} has, e.g. user {user!r} "
                f"seed {seed}; a paired comparison needs both on the same users and seeds",
                column="variant",
            )
    users = sorted(pivots[variant].index.astype(str))
    seeds = sorted(pivots[variant].columns)
    a = pivots[variant].loc[users, seeds].to_numpy(dtype=np.float64)
    b = pivots[reference].loc[users, seeds].to_numpy(dtype=np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        raise DataError(
            where,
            f"variants {variant!r} / {reference!r}: some users lack a seed the others have, or a value is "
            "missing",
            column="seed",
        )
    return users, a, b
