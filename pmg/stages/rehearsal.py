"""Stage `rehearsal_models`: the `rehearsal` profile's models (issue 15).

The `full` profile's classes and configurations (Llama-2-7b-chat, SD 1.5,
BLIP-2 OPT-2.7b, open_clip ViT-B-32) with random weights and the sizes of
params `rehearsal` (`pmg.models.rehearsal`), one folder per model of
`rehearsal.profile`; the build facts go to `metrics/models/rehearsal.json`.
Only the `rehearsal` profile runs it by default (Prefect, `make gpu-check`);
`dvc.yaml` declares it like every stage of the table.
"""

from __future__ import annotations

from collections.abc import Callable

from pmg.config import Params
from pmg.errors import ConfigError
from pmg.io import write_json_atomic
from pmg.stages.catalogue import Catalogue

#: The build facts kept in the metrics file, per model.
FACTS = ("path", "class", "parameters", "seconds")


def run(params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print) -> dict:
    """Write every rehearsal model folder (on `rehearsal.device`); return the build facts per model.

    Raises:
        ConfigError: `rehearsal.profile` is not a profile of `profiles`.
    """
    from pmg.models.rehearsal import build_rehearsal

    catalogue = catalogue or Catalogue(params)
    cfg = params.rehearsal
    if cfg.profile not in params.profiles:
        raise ConfigError(f"rehearsal.profile is {cfg.profile!r} but profiles defines only {sorted(params.profiles)}")
    report = build_rehearsal(cfg, params.profiles[cfg.profile], device=cfg.device, say=log)
    summary = {role: {k: facts[k] for k in FACTS} for role, facts in report.items()}
    metrics = {"scale": cfg.scale, "seed": cfg.seed, "models": summary}
    write_json_atomic(catalogue.rehearsal_metrics(), metrics)
    return metrics
