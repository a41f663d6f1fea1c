"""Candidate selection (PMG §3.4): the CLIP score `z` balances preference and accuracy.

A pretrained image-text model (CLIP) embeds each candidate image `M` and the
two keyword strings; the preference score is `d_p = cos(e_M, e_p)` (to the
preference keywords `k_p`), the accuracy score `d_t = cos(e_M, e_t)` (to the
target keywords `k_t`), and

    z = alpha·log d_p + (1 - alpha)·log d_t          (alpha = 0.5 by default)

The candidate with the highest `z` of its (user, target) pair is the output;
a tie goes to the lower candidate index.

Non-positive cosines (decision)
-------------------------------
`log` is undefined for `d <= 0`, and CLIP cosines can be zero or negative
(a small or weak scorer, an image far from a text). Rule: a cosine below
`select.min_cosine` (ε = 1e-6 by default) is raised to ε before the log,

    z = alpha·log max(d_p, ε) + (1 - alpha)·log max(d_t, ε),

and the row is marked `floored`. Why this and not `(1 + cos)/2`:

* For every cosine >= ε it *is* the paper's formula, unchanged, so the
  paper's ranking holds wherever the paper's formula is defined; `(1 +
  cos)/2` changes the value and the ranking of every candidate, positive
  cosines included (it compresses `d` into [0.5, 1], where `log` is almost
  linear, so the product-like balance of the two scores is lost).
* It is the formula's own limit: `z -> -inf` as a cosine falls to 0, so a
  non-positive cosine is the worst a score can be; the floor only cuts that
  at `log ε ≈ -13.8` so that `z` stays finite and comparable.
* A candidate with a non-positive score loses to any candidate whose two
  cosines are both above `ε ** max(alpha, 1 - alpha)` (1e-3 at alpha 0.5;
  CLIP cosines of related image and text are ~0.2-0.35), because its `z` is
  at most `max(alpha, 1 - alpha)·log ε`. Among candidates that all have a
  floored score, the other score still orders them, and `z` is monotone in
  each cosine throughout.
* `alpha = 1` or `0` drops a term entirely (`0·log ε = 0`), as the formula says.

Texts and images are embedded in batches: all candidate images of a
scenario in one `embed_images` call, each distinct keyword string once. The
images come in loaded (the `select` stage reads them from the candidates
folder); nothing here touches the disk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pmg.config import SelectConfig
from pmg.io import validate
from pmg.schemas import Candidates, Scores

log = logging.getLogger(__name__)

PAIR = ["user_id", "scenario", "target_item"]
COLUMNS = [*PAIR, "candidate", "w_p", "w_t", "d_p", "d_t", "z", "floored", "chosen"]


def selection_score(
    d_p: np.ndarray | Sequence[float],
    d_t: np.ndarray | Sequence[float],
    alpha: float,
    *,
    min_cosine: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """`z = alpha·log max(d_p, ε) + (1 - alpha)·log max(d_t, ε)` (see the module docstring).

    Args:
        d_p: (N,) preference cosines.
        d_t: (N,) accuracy cosines.
        alpha: weight of the preference term, in [0, 1].
        min_cosine: ε, the floor, in (0, 1).

    Returns:
        z (N,) float64, and floored (N,) bool: a cosine was below ε.

    Raises:
        ValueError: alpha or ε out of range, or a NaN cosine.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 < min_cosine < 1.0:
        raise ValueError(f"min_cosine must be in (0, 1), got {min_cosine}")
    d_p = np.asarray(d_p, dtype=np.float64)
    d_t = np.asarray(d_t, dtype=np.float64)
    if np.isnan(d_p).any() or np.isnan(d_t).any():
        raise ValueError(f"cosines must not be NaN, got d_p={d_p.tolist()}, d_t={d_t.tolist()}")
    floored = (d_p < min_cosine) | (d_t < min_cosine)
    # Rounding can put a cosine a hair above 1; log stays <= 0.
    log_p = np.log(np.clip(d_p, min_cosine, 1.0))
    log_t = np.log(np.clip(d_t, min_cosine, 1.0))
    # Both logs are finite, so alpha = 0 or 1 drops its term entirely (0·log ε = 0).
    return alpha * log_p + (1.0 - alpha) * log_t, floored


def cosines(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> np.ndarray:
    """Row-wise cosine of (N, E) image and (N, E) text embeddings (L2-normalised or not)."""
    a = torch.nn.functional.normalize(image_embeds.double(), dim=-1)
    b = torch.nn.functional.normalize(text_embeds.double(), dim=-1)
    return np.clip((a * b).sum(-1).cpu().numpy(), -1.0, 1.0)


def score_candidates(
    scorer: Any,
    images: Sequence[Image.Image],
    preference_text: str,
    target_text: str,
    alpha: float,
    *,
    min_cosine: float = 1e-6,
) -> pd.DataFrame:
    """Preference score, accuracy score and `z` of the candidates of one pair.

    Args:
        scorer: a `Scorer` (`embed_images`, `embed_texts`, L2-normalised).
        images: K candidate images.
        preference_text: the preference keywords string (`e_p`).
        target_text: the target keywords string (`e_t`).
        alpha: weight of the preference term.
        min_cosine: the floor ε of the cosines before the log.

    Returns:
        K rows, in image order: `d_p`, `d_t`, `z`, `floored`.
    """
    image_embeds = scorer.embed_images(list(images))  # (K, E)
    text_embeds = scorer.embed_texts([preference_text, target_text])  # (2, E)
    d_p = cosines(image_embeds, text_embeds[0:1].expand_as(image_embeds))
    d_t = cosines(image_embeds, text_embeds[1:2].expand_as(image_embeds))
    z, floored = selection_score(d_p, d_t, alpha, min_cosine=min_cosine)
    return pd.DataFrame({"d_p": d_p, "d_t": d_t, "z": z, "floored": floored})


def select_best(scores: pd.DataFrame) -> pd.DataFrame:
    """Mark the best candidate of every (user, scenario, target) pair.

    Args:
        scores: rows with `user_id`, `scenario`, `target_item`, `candidate`, `z`.

    Returns:
        A copy with a `chosen` column: True on exactly one row per pair, the
        highest `z`, the lowest `candidate` among equal `z`.

    Raises:
        ValueError: a NaN `z` (it would make the choice arbitrary).
    """
    frame = scores.copy()
    if frame["z"].isna().any():
        bad = frame.loc[frame["z"].isna(), [*PAIR, "candidate"]].to_dict("records")
        raise ValueError(f"z is NaN for {bad}")
    # Per pair: highest z first, then the lowest candidate index.
    order = frame.sort_values(
        [*PAIR, "z", "candidate"], ascending=[True, True, True, False, True], kind="stable"
    )
    best = order.drop_duplicates(PAIR, keep="first").index
    frame["chosen"] = False
    frame.loc[best, "chosen"] = True
    return frame


@dataclass(frozen=True)
class SelectReport:
    """What one selection did (JSON-able; the stage's metrics).

    Attributes:
        scenario: the scenario.
        pairs: (user, target) pairs, one chosen candidate each.
        candidates: candidates scored.
        floored: rows with a cosine raised to `select.min_cosine`.
        alpha: `select.alpha` (None when there was nothing to score).
        chosen_weights: `"w_p:w_t"` -> pairs whose chosen candidate has them.
        mean_chosen_d_p, mean_chosen_d_t: mean scores of the chosen candidates.
    """

    scenario: str
    pairs: int
    candidates: int
    floored: int
    alpha: float | None = None
    chosen_weights: dict[str, int] | None = None
    mean_chosen_d_p: float | None = None
    mean_chosen_d_t: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report; the score fields only when something was scored."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _ONLY_WHEN_SCORED}


_ONLY_WHEN_SCORED = ("alpha", "chosen_weights", "mean_chosen_d_p", "mean_chosen_d_t")


def select_candidates(
    cfg: SelectConfig,
    scenario: str,
    candidates: pd.DataFrame,
    images: Sequence[Image.Image],
    *,
    scorer: Any,
) -> tuple[pd.DataFrame, SelectReport]:
    """Score every candidate of one scenario and choose the best of each pair.

    Args:
        cfg: the `select` section.
        scenario: clothing, movies or emoji.
        candidates: the scenario's `Candidates` table (other scenarios' rows
            are ignored).
        images: the candidate images, one per row of `candidates` of this
            scenario, in row order (RGB).
        scorer: the loaded `Scorer`.

    Returns:
        The validated `Scores` table and its report (pairs, floored rows,
        the chosen weights).
    """
    candidates = validate(candidates, Candidates, f"select input (candidates[{scenario}])")
    mine = (candidates["scenario"] == scenario).to_numpy()
    candidates = candidates[mine].reset_index(drop=True)
    if candidates.empty:
        frame = validate(pd.DataFrame(columns=COLUMNS), Scores, f"scores[{scenario}]")
        return frame, SelectReport(scenario=scenario, pairs=0, candidates=0, floored=0)
    if len(images) != len(candidates):
        raise ValueError(f"{len(images)} images for {len(candidates)} candidates of {scenario!r}")
    image_embeds = scorer.embed_images(list(images))  # (N, E), batched inside
    texts = list(dict.fromkeys([*candidates["preference_text"], *candidates["target_text"]]))
    text_embeds = scorer.embed_texts(texts)  # (U, E)
    row_of = {text: i for i, text in enumerate(texts)}
    e_p = text_embeds[[row_of[t] for t in candidates["preference_text"]]]
    e_t = text_embeds[[row_of[t] for t in candidates["target_text"]]]
    d_p, d_t = cosines(image_embeds, e_p), cosines(image_embeds, e_t)
    z, floored = selection_score(d_p, d_t, cfg.alpha, min_cosine=cfg.min_cosine)
    frame = candidates[[*PAIR, "candidate", "w_p", "w_t"]].assign(d_p=d_p, d_t=d_t, z=z, floored=floored)
    frame = validate(select_best(frame)[COLUMNS], Scores, f"scores[{scenario}]")
    chosen = frame[frame["chosen"]]
    report = SelectReport(
        scenario=scenario,
        alpha=cfg.alpha,
        pairs=len(chosen),
        candidates=len(frame),
        floored=int(frame["floored"].sum()),
        chosen_weights={
            f"{w_p:g}:{w_t:g}": int(n) for (w_p, w_t), n in chosen.groupby(["w_p", "w_t"]).size().items()
        },
        mean_chosen_d_p=float(chosen["d_p"].mean()),
        mean_chosen_d_t=float(chosen["d_t"].mean()),
    )
    return frame, report


def chosen_candidates(scores: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """The `Candidates` rows of the chosen candidates (one per pair), with their scores."""
    chosen = scores.loc[scores["chosen"], [*PAIR, "candidate", "d_p", "d_t", "z"]]
    return candidates.merge(chosen, on=[*PAIR, "candidate"], how="inner", validate="one_to_one")

