"""The mismatched-user control's measurements: every output against every test user's history.

The permutation test of :func:`pmg.evaluate.stats.personalisation_gap` needs,
per variant, the `(n, n)` matrix `M[i, j]` = metric of user `i`'s output
against user `j`'s history (mean over `j`'s history images). The history
images are the same for every variant, so :class:`HistoryBank` reads them
and runs the LPIPS trunk on them once per scenario; a variant then costs
the trunk on its `n` outputs and the LPIPS heads (and SSIM's cross moment)
on `n x H` pairs, `H` the history images of all users (about `5 n`).

Only LPIPS-AlexNet and SSIM are measured here by default: VGG features of
a 64 px image take about 2 MB, so holding every history image's VGG
features at once (the point of the bank) would cost ~2 MB x `5 n`.

A history image that is missing is dropped (the main evaluation counts it);
a user left with none, or an output that cannot be read, leaves a NaN row or
column, which the statistics report as an error naming the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pmg.evaluate.metrics import MetricModels, lpips_features, lpips_from_features, load_image, ssim_pairs

CONTROL_METRICS = ("lpips_alex", "ssim")
"""Metrics of the control (a `lpips_<net>` is measured when that net is loaded)."""


class HistoryBank:
    """The test users' history images, read and passed through the LPIPS trunks once.

    Args:
        users: the test user ids, in the order of the matrix rows and columns.
        histories: per user, the history image files (None = no image).
        models: the LPIPS networks.
        nets: trunks to measure (those loaded among them).
        image_size: the evaluation's common side S.
        batch_size: images (or pairs) per pass.
        with_ssim: also measure SSIM.
    """

    def __init__(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[Path | None]],
        models: MetricModels,
        *,
        nets: Sequence[str] = ("alex",),
        image_size: int = 64,
        batch_size: int = 32,
        with_ssim: bool = True,
    ) -> None:
        if len(users) != len(histories):
            raise ValueError(f"{len(users)} users but {len(histories)} histories")
        if len(set(users)) != len(users):
            raise ValueError("user ids must be distinct (one output per test user)")
        self.users = [str(u) for u in users]
        self.models = models
        self.nets = tuple(net for net in models.nets if net in nets)
        self.image_size = image_size
        self.batch_size = batch_size
        self.with_ssim = with_ssim
        arrays, owner = [], []
        cache: dict[str, np.ndarray | None] = {}
        for j, files in enumerate(histories):
            for path in files:
                key = str(path)
                if key not in cache:
                    cache[key] = load_image(path, image_size).pixels if path is not None else None
                if cache[key] is not None:
                    arrays.append(cache[key])
                    owner.append(j)
        size = (0, 3, image_size, image_size)
        self.images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(size)  # (H, 3, S, S)
        self.owner = np.asarray(owner, dtype=np.int64)  # (H,) column of each history image
        self.features = {
            net: lpips_features(models.lpips[net], self.images, batch_size=batch_size) for net in self.nets
        }

    @property
    def metrics(self) -> tuple[str, ...]:
        return (*(f"lpips_{net}" for net in self.nets), *(("ssim",) if self.with_ssim else ()))

    def matrix(self, outputs: Sequence[Path | None]) -> dict[str, np.ndarray]:
        """Every output against every user's history.

        Args:
            outputs: user `i`'s chosen output file (None = none), in the bank's user order.

        Returns:
            `{metric: (n, n) float64}` with `[i, j]` = mean metric of output `i`
            against user `j`'s history images; NaN where output `i` is
            unreadable or user `j` has no history image.
        """
        n = len(self.users)
        if len(outputs) != n:
            raise ValueError(f"{len(outputs)} outputs for {n} users")
        loaded = [load_image(path, self.image_size).pixels if path is not None else None for path in outputs]
        rows = [i for i, pixels in enumerate(loaded) if pixels is not None]
        result = {metric: np.full((n, n), np.nan) for metric in self.metrics}
        count = np.bincount(self.owner, minlength=n).astype(np.float64)  # (n,) history images per user
        if not rows or not len(self.owner):
            return result
        out_images = torch.from_numpy(np.stack([loaded[i] for i in rows]))  # (m, 3, S, S)
        m, h = len(rows), len(self.owner)
        # Pair (output r, history image k) for all r, k; outputs are indexed after the H history images.
        index_a = torch.arange(m).repeat_interleave(h) + h  # (m*h,)
        index_b = torch.arange(h).repeat(m)  # (m*h,)
        onehot = np.zeros((h, n))
        onehot[np.arange(h), self.owner] = 1.0  # (H, n): sums each output's values per history owner
        values: dict[str, torch.Tensor] = {}
        for net in self.nets:
            model = self.models.lpips[net]
            out_features = lpips_features(model, out_images, batch_size=self.batch_size)
            features = [torch.cat([hist, out]) for hist, out in zip(self.features[net], out_features)]
            values[f"lpips_{net}"] = lpips_from_features(
                model, features, index_a, index_b, batch_size=self.batch_size
            )
        if self.with_ssim:
            values["ssim"] = ssim_pairs(
                torch.cat([self.images, out_images]), index_a, index_b, batch_size=self.batch_size
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            for metric, flat in values.items():
                per_image = flat.numpy().astype(np.float64).reshape(m, h)  # (m, H)
                # A user without history images: 0 / 0 = NaN.
                result[metric][rows] = (per_image @ onehot) / count[None, :]
        return result
