"""DVC stage `train_soft`: the soft preference adapter of one scenario (PMG step 4).

Trains the bias-correcting LLM's adapter (L multimodal tokens, P-Tuning v2
prefix of length S, projection into the generator's text-encoder width) on the
described users' supervision images and writes:

* `<train_soft.out>/<scenario>/` — `adapter.safetensors` + `adapter_config.json`
  (base model ids, widths, L, S, training params, data hash);
* `metrics/train_soft/<scenario>.json` — losses, the held-out validation loss
  and the same model with the soft embeddings zeroed, steps per second;
* `plots/train_soft/<scenario>.csv` — the training curve (DVC plot).

Scenarios not in `train_soft.scenarios` get no adapter: generation then runs
with keywords only for them, and the metrics file says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from pmg import schemas
from pmg.config import Params
from pmg.data.store import read_scenario
from pmg.io import read_table, write_json_atomic, write_text_atomic
from pmg.stages import models


def _curve_csv(curves: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", "train_loss", "val_loss", "val_loss_zeroed"], extrasaction="ignore")
    writer.writeheader()
    for row in curves:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in writer.fieldnames})
    return buffer.getvalue()


def train_scenario(params: Params, scenario: str, *, out: Path, llm=None, generator=None, cfg=None, log=print):
    """Train and save one scenario's adapter into `out`; return the training result.

    `cfg` overrides `params.train_soft` (the ablation adapters differ in L
    and the prefix switch only).
    """
    from pmg.method.soft import save_adapter
    from pmg.method.train_soft import build_examples, train_soft

    cfg = cfg or params.train_soft
    prepared = read_scenario(Path(params.prepare.out) / scenario)
    descriptions = read_table(Path(params.describe.out) / f"{scenario}.parquet", schemas.Descriptions)
    keywords = read_table(Path(params.keywords.out) / f"{scenario}.parquet", schemas.Keywords)
    examples = build_examples(prepared, descriptions, keywords)
    llm = llm or models.llm(params)
    generator = generator or models.generator(params)
    model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=params.base.seed, log=log)
    save_adapter(
        model,
        out,
        {
            "scenario": scenario,
            "base_llm_spec": params.profile.llm.model_dump(mode="json"),
            "generator": params.profile.generator.model_dump(mode="json"),
            "training": cfg.model_dump(mode="json"),
            "data_hash": result.data_hash,
            "train_users": result.train_users,
            "val_users": result.val_users,
        },
    )
    return result


def run(
    params: Params,
    scenario: str,
    *,
    metrics_dir: Path = Path("metrics/train_soft"),
    plots_dir: Path = Path("plots/train_soft"),
    log: Callable[[str], object] = print,
) -> dict:
    """Train one scenario's adapter (or record that it has none); return the metrics."""
    out = Path(params.train_soft.out) / scenario
    if scenario not in params.train_soft.scenarios:
        metrics = {"trained": False, "reason": f"{scenario!r} is not in train_soft.scenarios"}
        write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
        write_text_atomic(plots_dir / f"{scenario}.csv", _curve_csv([]))
        out.mkdir(parents=True, exist_ok=True)
        log(f"train_soft {scenario}: skipped ({metrics['reason']})")
        return metrics
    result = train_scenario(params, scenario, out=out, log=log)
    metrics = {"trained": True, "adapter_dir": str(out), **result.metrics}
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    write_text_atomic(plots_dir / f"{scenario}.csv", _curve_csv(result.curves))
    log(f"train_soft {scenario}: {metrics}")
    return metrics
