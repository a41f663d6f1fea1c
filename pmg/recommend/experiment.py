"""Table 4 of PMG (§4.6): each setting × each training seed, evaluated on the test users.

`run_experiment` takes the graph (`pmg.recommend.data.split_interactions`)
and the settings' inputs (`setting_inputs`) and returns three tables: per
(setting, seed, test user, metric) values, per-epoch training curves, and
per (setting, seed) run facts; `summarise` turns them into the metrics
document (mean and 95% interval per setting and metric, paired differences
between consecutive settings). Nothing here reads or writes a file.

Seeds. Seed `s` seeds the initialisation (`torch.manual_seed(s)` right
before the model is built, so every setting starts from the same ID
embeddings), the edge order and the negatives. Settings are therefore paired
by seed as well as by user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pmg.config import RecommendConfig
from pmg.io import validate as validate_table
from pmg.recommend.data import SETTING_LABELS, SETTINGS, InteractionSplit, SettingInputs
from pmg.recommend.metrics import bootstrap_interval, recall_ndcg, top_k_items
from pmg.recommend.mmgcn import MMGCN, MeanAdjacency, edges_tensor, fit
from pmg.schemas import RecommendCurves, RecommendUserMetrics

log = logging.getLogger(__name__)

#: Differences reported, each paired per (seed, user): what adding one input changes.
COMPARISONS = (
    ("item_image", "no_image"),
    ("mean_user", "item_image"),
    ("generated_user", "item_image"),
    ("generated_user", "mean_user"),
)


@dataclass
class ExperimentResult:
    """What `run_experiment` returns.

    Attributes:
        user_metrics: `schemas.RecommendUserMetrics` rows (test users).
        curves: `schemas.RecommendCurves` rows, one per (setting, seed, epoch).
        runs: one row per (setting, seed): `best_epoch`, `seconds`,
            `edges_per_second`, `parameters`.
    """

    user_metrics: pd.DataFrame
    curves: pd.DataFrame
    runs: pd.DataFrame


def evaluate(
    model: MMGCN, adjacency: MeanAdjacency, split: InteractionSplit, held: dict[int, np.ndarray], ks: Sequence[int]
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Full-ranking metrics of the users in `held` (training items masked).

    Returns:
        The user indices (sorted) and `{"recall@K": (U,), "ndcg@K": (U,)}`.
    """
    users = sorted(held)
    if not users:
        return [], {}
    with torch.no_grad():
        scores = model.scores(adjacency, torch.as_tensor(users, dtype=torch.long))  # (U, I)
    top = top_k_items(scores, split.seen(users), max(ks))
    return users, recall_ndcg(top, [held[u] for u in users], ks)


def build_model(split: InteractionSplit, inputs: SettingInputs, cfg: RecommendConfig, seed: int) -> MMGCN:
    """The setting's MMGCN, initialised from `seed`."""
    torch.manual_seed(int(seed))
    as_tensor = lambda a: None if a is None else torch.as_tensor(a)  # noqa: E731
    return MMGCN(
        split.n_users,
        split.n_items,
        dim=cfg.dim,
        layers=cfg.layers,
        latent_dim=cfg.latent_dim,
        item_features=as_tensor(inputs.item_features),
        item_mask=as_tensor(inputs.item_mask),
        user_features=as_tensor(inputs.user_features),
        user_mask=as_tensor(inputs.user_mask),
    )


def run_experiment(
    split: InteractionSplit, inputs: Sequence[SettingInputs], cfg: RecommendConfig
) -> ExperimentResult:
    """Train and test every setting with every seed of `cfg.seeds`.

    Args:
        split: the graph and held-out items; needs test users.
        inputs: one `SettingInputs` per setting to run, in report order.
        cfg: the `recommend` section.

    Raises:
        ValueError: no test users, no training edge, or a repeated setting.
    """
    if not split.test:
        raise ValueError("the recommendation split has no test user with held-out items; nothing to report")
    if len(split.train_edges) == 0:
        raise ValueError("the recommendation split has no training edge")
    names = [i.setting for i in inputs]
    if len(set(names)) != len(names):
        raise ValueError(f"settings repeat: {names}")
    adjacency = MeanAdjacency(*edges_tensor(split.train_edges), split.n_users, split.n_items)
    users, items = edges_tensor(split.train_edges)
    ks = tuple(cfg.top_k)
    k_max = max(ks)
    metric_rows, curve_rows, run_rows = [], [], []
    for setting in inputs:
        for seed in cfg.seeds:
            started = time.perf_counter()
            model = build_model(split, setting, cfg, seed)

            def validate(m: MMGCN) -> dict[str, float]:
                _, values = evaluate(m, adjacency, split, split.validation, ks)
                return {name: float(v.mean()) for name, v in values.items()}

            result = fit(
                model,
                adjacency,
                users,
                items,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                reg_weight=cfg.reg_weight,
                seed=seed,
                validate=validate if split.validation else None,
                validate_every=cfg.validate_every,
                select_metric=cfg.select_metric,
            )
            test_users, values = evaluate(model, adjacency, split, split.test, ks)
            for name, per_user in values.items():
                metric, k = name.split("@")
                metric_rows += [
                    {"setting": setting.setting, "seed": int(seed), "user_id": split.user_ids[u],
                     "metric": metric, "k": int(k), "value": float(v)}
                    for u, v in zip(test_users, per_user)
                ]  # fmt: skip
            for row in result.curve:
                curve_rows.append(
                    {
                        "setting": setting.setting, "seed": int(seed), "epoch": int(row["epoch"]),
                        "loss": row["loss"], "bpr": row["bpr"], "seconds": row["seconds"], "k": k_max,
                        "validation_recall": row.get(f"recall@{k_max}", np.nan),
                        "validation_ndcg": row.get(f"ndcg@{k_max}", np.nan),
                    }
                )  # fmt: skip
            seconds = time.perf_counter() - started
            run_rows.append(
                {
                    "setting": setting.setting, "seed": int(seed), "best_epoch": result.best_epoch,
                    "seconds": seconds, "edges_per_second": result.edges_per_second,
                    "parameters": sum(p.numel() for p in model.parameters()),
                }
            )  # fmt: skip
            log.info(
                "recommend[%s, seed %d]: best epoch %d, test recall@%d %.4f, %.1f s",
                setting.setting, seed, result.best_epoch, k_max,
                float(values[f"recall@{k_max}"].mean()), seconds,
            )  # fmt: skip
    return ExperimentResult(
        validate_table(pd.DataFrame(metric_rows), RecommendUserMetrics, "recommend user metrics"),
        validate_table(pd.DataFrame(curve_rows), RecommendCurves, "recommend training curves"),
        pd.DataFrame(run_rows),
    )


def _matrix(user_metrics: pd.DataFrame, setting: str, metric: str, k: int) -> pd.DataFrame:
    rows = user_metrics[
        (user_metrics["setting"] == setting) & (user_metrics["metric"] == metric) & (user_metrics["k"] == k)
    ]
    return rows.pivot(index="seed", columns="user_id", values="value").sort_index().sort_index(axis=1)


def summarise(
    result: ExperimentResult, cfg: RecommendConfig, counts: dict[str, object] | None = None
) -> dict[str, object]:
    """The metrics document: Table 4 with 95% intervals, paired differences, run facts.

    Shape::

        {"settings": {setting: {"label", "recall@10": {"mean", "low", "high", "seed_means"}, ...,
                                "seconds", "edges_per_second", "best_epochs"}},
         "differences": {"generated_user-mean_user": {"recall@10": {"mean", "low", "high"}, ...}, ...},
         "protocol": {...}, "counts": counts}
    """
    metrics = [(m, k) for k in cfg.top_k for m in ("recall", "ndcg")]
    present = [s for s in SETTINGS if s in set(result.user_metrics["setting"])]
    settings: dict[str, object] = {}
    for setting in present:
        entry: dict[str, object] = {"label": SETTING_LABELS[setting]}
        for metric, k in metrics:
            matrix = _matrix(result.user_metrics, setting, metric, k).to_numpy()
            mean, low, high = bootstrap_interval(matrix, resamples=cfg.bootstrap_resamples, seed=cfg.seeds[0])
            entry[f"{metric}@{k}"] = {
                "mean": mean, "low": low, "high": high, "seed_means": [float(x) for x in matrix.mean(axis=1)],
            }
        runs = result.runs[result.runs["setting"] == setting]
        entry.update(
            seconds=float(runs["seconds"].sum()),
            edges_per_second=float(runs["edges_per_second"].mean()),
            best_epochs=[int(e) for e in runs["best_epoch"]],
        )
        settings[setting] = entry
    differences: dict[str, object] = {}
    for a, b in COMPARISONS:
        if a not in present or b not in present:
            continue
        entry = {}
        for metric, k in metrics:
            left, right = _matrix(result.user_metrics, a, metric, k), _matrix(result.user_metrics, b, metric, k)
            diff = (left - right).to_numpy()  # aligned on seed and user
            mean, low, high = bootstrap_interval(diff, resamples=cfg.bootstrap_resamples, seed=cfg.seeds[0])
            entry[f"{metric}@{k}"] = {"mean": mean, "low": low, "high": high}
        differences[f"{a}-{b}"] = entry
    n_users = int(result.user_metrics["user_id"].nunique()) if len(result.user_metrics) else 0
    return {
        "settings": settings,
        "differences": differences,
        "protocol": {
            "test_users": n_users,
            "seeds": [int(s) for s in cfg.seeds],
            "holdout_last": cfg.holdout_last,
            "ranking": "all items, training items masked",
            "interval": f"95% percentile bootstrap over test users and seeds ({cfg.bootstrap_resamples} resamples)",
        },
        "counts": dict(counts or {}),
    }


def table_markdown(summary: dict[str, object], ks: Sequence[int] = (10, 20)) -> str:
    """Table 4 as Markdown: one row per setting, `mean [low, high]` per metric."""
    columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    header = "| setting | " + " | ".join(c.replace("recall", "Recall").replace("ndcg", "NDCG") for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for entry in summary["settings"].values():  # type: ignore[union-attr]
        cells = [f"{entry[c]['mean']:.4f} [{entry[c]['low']:.4f}, {entry[c]['high']:.4f}]" for c in columns]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["COMPARISONS", "ExperimentResult", "build_model", "evaluate", "run_experiment", "summarise", "table_markdown"]
