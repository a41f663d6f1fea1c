"""Stage `train_soft`: the soft preference adapter of one scenario (PMG step 4).

Trains the bias-correcting LLM's adapter (L multimodal tokens, P-Tuning v2
prefix of length S, projection into the generator's text-encoder width) on the
described train users' supervision images (validation users give the held-out
losses; test users, the evaluated ones, are never seen) and writes:

* the adapter folder — `adapter.safetensors` + `adapter_config.json` (the
  soft base LLM's spec and fingerprint, widths, L, S, training params, data hash);
* `metrics/train_soft/<scenario>.json` — losses, the held-out validation loss
  and the same model with the soft embeddings zeroed, steps per second;
* `plots/train_soft/<scenario>.csv` — the training curve (DVC plot).

The base LLM is `profiles.<p>.soft_llm` (default: `llm`), which must be a
local LLM. Scenarios not in `train_soft.scenarios` get no adapter: generation
then runs with keywords only for them, and the metrics file says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmg import schemas
from pmg.config import Params, TrainSoftConfig
from pmg.data.dataset import users_in_split
from pmg.data.store import read_scenario
from pmg.errors import DataError
from pmg.io import read_table, write_json_atomic, write_text_atomic
from pmg.stages import loaders
from pmg.stages.catalogue import Catalogue


def _curve_csv(curves: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", "train_loss", "val_loss", "val_loss_zeroed"], extrasaction="ignore")
    writer.writeheader()
    for row in curves:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in writer.fieldnames})
    return buffer.getvalue()


def train_adapter(
    params: Params,
    scenario: str,
    *,
    out: Path,
    catalogue: Catalogue | None = None,
    cfg: TrainSoftConfig | None = None,
    llm: Any = None,
    generator: Any = None,
    log: Callable[[str], object] = print,
) -> Any:
    """Train and save one scenario's adapter into `out`; return the `SoftTrainingResult`.

    Args:
        out: the adapter folder to write.
        cfg: overrides `params.train_soft` (the ablation adapters differ in L
            and the prefix switch only).
        llm: the loaded soft base LLM (default: `profiles.<p>.soft_llm`, else `llm`).
        generator: the loaded generator (default: the profile's).

    Raises:
        ConfigError: the soft base LLM is not a local one.
    """
    from pmg.method.soft import save_adapter
    from pmg.method.train_soft import build_examples, train_soft

    catalogue = catalogue or Catalogue(params)
    cfg = cfg or params.train_soft
    base_spec, _ = loaders.soft_llm_spec(params)  # a clear error before anything is read or loaded
    prepared = read_scenario(catalogue.prepared(scenario))
    descriptions = read_table(catalogue.descriptions(scenario), schemas.Descriptions)
    keywords = read_table(catalogue.keywords(scenario), schemas.Keywords)
    # The protocol: train users learn, validation users give the held-out losses, test users are never seen.
    learners = users_in_split(prepared.splits, "train", "validation")
    examples = [e for e in build_examples(prepared, descriptions, keywords) if str(e.user_id) in learners]
    if not examples:
        raise DataError(f"{scenario}: no described train or validation user to train the soft adapter on")
    llm = llm or loaders.soft_llm(params)
    generator = generator or loaders.generator(params)
    model, result = train_soft(
        cfg,
        examples,
        llm=llm,
        generator=generator,
        seed=params.base.seed,
        log=log,
        validation_users=users_in_split(prepared.splits, "validation"),
    )
    save_adapter(
        model,
        out,
        {
            "scenario": scenario,
            "base_llm_spec": base_spec.model_dump(mode="json"),
            "generator": params.profile.generator.model_dump(mode="json"),
            "training": cfg.model_dump(mode="json"),
            "data_hash": result.data_hash,
            "train_users": result.train_users,
            "val_users": result.val_users,
        },
    )
    return result


def run(
    params: Params, scenario: str, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Train one scenario's adapter (or record that it has none); return the metrics."""
    catalogue = catalogue or Catalogue(params)
    out = catalogue.adapter(scenario)
    metrics_file, curve_file = catalogue.metrics("train_soft", scenario), catalogue.train_soft_curve(scenario)
    if scenario not in params.train_soft.scenarios:
        metrics = {"trained": False, "reason": f"{scenario!r} is not in train_soft.scenarios"}
        write_json_atomic(metrics_file, metrics)
        write_text_atomic(curve_file, _curve_csv([]))
        out.mkdir(parents=True, exist_ok=True)
        log(f"train_soft {scenario}: skipped ({metrics['reason']})")
        return metrics
    result = train_adapter(params, scenario, out=out, catalogue=catalogue, log=log)
    metrics = {"trained": True, "adapter_dir": str(out), **result.metrics}
    write_json_atomic(metrics_file, metrics)
    write_text_atomic(curve_file, _curve_csv(result.curves))
    log(f"train_soft {scenario}: {metrics}")
    return metrics
