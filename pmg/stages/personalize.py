"""One (user, target) pair through the whole PMG chain, on the trained artifacts.

`pmg personalize --scenario S --user U --target T` and the Prefect batch flow
call :func:`personalize`: describe the user's behaviour, extract preference
and target keywords (through the shared LLM answer cache, so a user the
pipeline already saw costs no LLM call), load the scenario's soft preference
adapter, generate one candidate per weight pair in one batched call, score
them with CLIP and pick the best. It runs the same stage functions as the
DVC stages (`describe_users`, `extract_keywords`, `generate_for`,
`select_in`); only the split row is replaced so that any catalogue item can
be the target. Not a DVC stage: a door beside them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pmg.config import Params
from pmg.data.store import read_scenario
from pmg.errors import DataError
from pmg.io import write_table
from pmg.schemas import Scores
from pmg.stages import loaders
from pmg.stages.catalogue import SCORES_TABLE, Catalogue


def _with_target(prepared, user: str, target: str):
    splits = prepared.splits
    rows = splits[splits["user_id"] == user]
    if rows.empty:
        known = ", ".join(sorted(splits["user_id"].astype(str))[:10])
        raise DataError(prepared.folder / "splits.parquet", f"unknown user {user!r} (users include {known}, ...)")
    if target not in set(prepared.items["item_id"]):
        raise DataError(prepared.folder / "items.parquet", f"unknown target item {target!r}", column="item_id")
    row = rows.iloc[0]
    history = json.loads(row["history_items"])
    if target in history:
        raise DataError(
            prepared.folder / "splits.parquet",
            f"target {target!r} is in user {user!r}'s history {history}; personalise an item they have not seen",
        )
    new = splits.copy()
    new.loc[new["user_id"] == user, "target_item"] = target
    if row["supervision_item"] == target:
        # The supervision item is only used for training; keep the split valid.
        new.loc[new["user_id"] == user, "supervision_item"] = row["target_item"]
    return dataclasses.replace(prepared, splits=new)


def personalize(
    params: Params,
    scenario: str,
    user: str,
    target: str,
    *,
    adapter_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    models: dict[str, Any] | None = None,
    catalogue: Catalogue | None = None,
) -> dict:
    """Run the chain for one pair; return what was made.

    Args:
        params: all parameters.
        scenario: clothing, movies or emoji.
        user: a user of the prepared scenario.
        target: any catalogue item not in the user's history.
        adapter_dir: the soft preference adapter (default: the scenario's
            `train_soft` adapter); keywords only when it is absent.
        out_dir: root of the outputs (default `data/personalize`); each pair
            gets its own folder.
        models: already loaded `llm`, `captioner`, `generator`, `scorer`
            (the batch flow shares them across pairs); missing ones load.
        catalogue: where the trained artifacts are (default: from `params`).

    Returns:
        `candidates` (list of {candidate, w_p, w_t, d_p, d_t, z, chosen,
        image}), `chosen_image`, `preference_keywords`, `target_keywords`,
        `soft_embeddings` (whether an adapter was used) and `out_dir`.

    Raises:
        DataError: unknown user or target, or the target is in the history.
    """
    from pmg.stages.describe import describe_users
    from pmg.stages.generate import generate_for
    from pmg.stages.keywords import extract_keywords
    from pmg.stages.select import select_in

    catalogue = catalogue or Catalogue(params)
    if out_dir is not None:
        catalogue = Catalogue(
            params,
            metrics_root=catalogue.metrics_root,
            plots_root=catalogue.plots_root,
            personalize_root=Path(out_dir),
        )
    models = dict(models or {})
    prepared = _with_target(read_scenario(catalogue.prepared(scenario)), user, target)
    llm = models.get("llm") or loaders.llm(params)
    captioner = models.get("captioner") or (loaders.captioner(params) if params.describe.captions else None)
    descriptions, _ = describe_users(params, prepared, [user], llm=llm, captioner=captioner)
    keywords, _ = extract_keywords(params, scenario, descriptions, prepared.items, llm=llm)
    if keywords.empty:
        raise DataError(prepared.folder, f"user {user!r} has no behaviour to extract keywords from")
    generator = models.get("generator") or loaders.generator(params)
    soft_model = None
    if params.generate.use_soft:
        adapter = Path(adapter_dir) if adapter_dir else catalogue.adapter(scenario)
        if loaders.has_adapter(adapter):
            # The soft base is the keywords' LLM unless `soft_llm` names another: loaded once.
            soft_model = loaders.soft_model(
                params, adapter, generator=generator, base=loaders.soft_llm(params, loaded=llm)
            )
    candidates_dir = catalogue.personalized(scenario, user, target)
    rows: list[dict[str, Any]] = []

    def score(staging: Path, candidates: Any) -> None:
        # Scored in the staging folder and written there: the candidates and
        # their scores are committed together, under the folder's lock, or
        # not at all (the previous pair's folder stays as it was).
        scorer = models.get("scorer") or loaders.scorer(params)
        scores, _ = select_in(staging, params.select, scenario, candidates, scorer=scorer)
        merged = scores.merge(candidates[["candidate", "image_path"]], on="candidate")
        rows.extend(
            {
                "candidate": int(r.candidate),
                "w_p": float(r.w_p),
                "w_t": float(r.w_t),
                "d_p": float(r.d_p),
                "d_t": float(r.d_t),
                "z": float(r.z),
                "chosen": bool(r.chosen),
                "image": str((candidates_dir / r.image_path).resolve()),
            }
            for r in merged.sort_values("candidate").itertuples()
        )
        if not any(r["chosen"] for r in rows):
            # No scores table is written: an empty one would look like a finished pair.
            raise DataError(
                candidates_dir,
                f"no candidate was chosen for user {user!r} and target {target!r} ({len(rows)} scored)",
            )
        write_table(scores, staging / SCORES_TABLE, Scores)

    generate_for(
        params,
        scenario,
        candidates_dir,
        keywords=keywords,
        descriptions=descriptions,
        items=prepared.items,
        generator=generator,
        soft_model=soft_model,
        finish=score,
    )
    chosen = next(r for r in rows if r["chosen"])
    keyword_row = keywords.iloc[0]
    return {
        "scenario": scenario,
        "user": user,
        "target": target,
        "preference_keywords": json.loads(keyword_row["preference_keywords"]),
        "target_keywords": json.loads(keyword_row["target_keywords"]),
        "soft_embeddings": soft_model is not None,
        "candidates": rows,
        "chosen_image": chosen["image"],
        "chosen_weights": [chosen["w_p"], chosen["w_t"]],
        "out_dir": str(candidates_dir.resolve()),
    }
