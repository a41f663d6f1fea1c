"""One (user, target) pair through the whole PMG chain, on the trained artifacts.

`pmg personalize --scenario S --user U --target T` and the Prefect batch flow
call :func:`personalize`: describe the user's behaviour, extract preference
and target keywords (through the shared LLM answer cache, so a user the
pipeline already saw costs no LLM call), load the scenario's soft preference
adapter, generate one candidate per weight pair in one batched call, score
them with CLIP and pick the best. The same library functions as the DVC
stages run; only the split row is replaced so that any catalogue item can be
the target.
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
    out_dir: str | Path = "data/personalize",
    models: dict[str, Any] | None = None,
) -> dict:
    """Run the chain for one pair; return what was made.

    Args:
        params: all parameters.
        scenario: clothing, movies or emoji.
        user: a user of the prepared scenario.
        target: any catalogue item not in the user's history.
        adapter_dir: the soft preference adapter (default:
            `<train_soft.out>/<scenario>`); keywords only when it is absent.
        out_dir: root of the outputs; each pair gets its own folder.
        models: already loaded `llm`, `captioner`, `generator`, `scorer`
            (the batch flow shares them across pairs); missing ones load.

    Returns:
        `candidates` (list of {candidate, w_p, w_t, d_p, d_t, z, chosen,
        image}), `chosen_image`, `preference_keywords`, `target_keywords`,
        `soft_embeddings` (whether an adapter was used) and `out_dir`.

    Raises:
        DataError: unknown user or target, or the target is in the history.
    """
    from pmg.method.describe import run_describe
    from pmg.method.keywords import run_keywords
    from pmg.method.select import run_select
    from pmg.stages import models as loaders
    from pmg.stages.generate import generate_scenario, soft_model_for

    models = dict(models or {})
    prepared = _with_target(read_scenario(Path(params.prepare.out) / scenario), user, target)
    llm = models.get("llm") or loaders.llm(params)
    captioner = models.get("captioner") or (loaders.captioner(params) if params.describe.captions else None)
    descriptions = run_describe(params, scenario, llm=llm, captioner=captioner, prepared=prepared, users=[user])
    keywords = run_keywords(params, scenario, descriptions, llm=llm, items=prepared.items)
    if keywords.empty:
        raise DataError(prepared.folder, f"user {user!r} has no behaviour to extract keywords from")
    generator = models.get("generator") or loaders.generator(params)
    soft_model = None
    if params.generate.use_soft:
        soft_model = soft_model_for(
            params, scenario, generator, adapter_dir=Path(adapter_dir) if adapter_dir else None, llm=llm
        )
    pair_root = Path(out_dir) / f"{scenario}-{user}-{target}"
    candidates = generate_scenario(
        params,
        scenario,
        generator=generator,
        soft_model=soft_model,
        out_dir=pair_root,
        keywords=keywords,
        descriptions=descriptions,
        items=prepared.items,
    )
    candidates_dir = pair_root / scenario
    scores = run_select(
        params, scenario, candidates, scorer=models.get("scorer") or loaders.scorer(params), candidates_dir=candidates_dir
    )
    write_table(scores, candidates_dir / "scores.parquet", Scores)
    merged = scores.merge(candidates[["candidate", "image_path"]], on="candidate")
    rows = [
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
    ]
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
