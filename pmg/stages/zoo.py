"""Stages `zoo_llm`, `zoo_clip`, `zoo_sd`: the mini model zoo of the `mini` profile.

No registry package carries a pretrained CLIP or text-to-image model, so the
`mini` profile converts the packaged SmolLM2 GGUF into a Hugging Face folder
and trains a small CLIP and a small Stable Diffusion on the default world's
(image, caption) pairs. Each building stage writes its figures, including
wall time and peak memory, to `metrics/zoo/<part>.json` and fails (exit 2)
when its quality gate is missed; the metrics file is written either way, so
the reason is visible.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

from pmg.config import Params
from pmg.errors import PMGError
from pmg.io import write_json_atomic
from pmg.stages.catalogue import Catalogue

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file in the `smollm2` asset."""


class GateError(PMGError):
    """A zoo model missed its quality gate."""


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _finish(name: str, metrics: dict, started: float, catalogue: Catalogue, failures: list[str], log) -> dict:
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    metrics["peak_rss_mib"] = _peak_rss_mib()
    metrics["gate_passed"] = not failures
    write_json_atomic(catalogue.zoo_metrics(name), metrics)
    log(f"zoo {name}: {metrics['wall_seconds']} s, peak {metrics['peak_rss_mib']} MiB, gate {'passed' if not failures else 'MISSED'}")
    if failures:
        raise GateError(f"zoo {name} missed its quality gate:\n  " + "\n  ".join(failures))
    return metrics


def _pairs(params: Params, catalogue: Catalogue):
    """The (image, caption) pairs of every scenario of the run, split by item hash."""
    from pmg.zoo.pairs import load_pairs

    return load_pairs(
        {scenario: catalogue.prepared(scenario) for scenario in params.base.scenarios},
        heldout_fraction=params.zoo.clip.heldout_fraction,
    )


def run_llm(
    params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into `zoo.llm_out`."""
    from pmg.models.llm import convert_gguf_to_hf

    catalogue = catalogue or Catalogue(params)
    started = time.perf_counter()
    out = convert_gguf_to_hf(catalogue.asset("smollm2") / SMOLLM2_GGUF, catalogue.zoo("llm"), key="zoo.llm_out")
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    return _finish("llm", {"size_mib": round(size / 2**20, 1)}, started, catalogue, [], log)


def run_clip(
    params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Train the mini CLIP on the default world and check its zero-shot gate."""
    from pmg.zoo.clip import evaluate_mini_clip, gate_failures, train_mini_clip

    catalogue = catalogue or Catalogue(params)
    cfg = params.zoo.clip
    started = time.perf_counter()
    pairs = _pairs(params, catalogue)
    out = catalogue.zoo("clip")
    training = train_mini_clip(
        cfg, pairs, text_tower=catalogue.asset("minilm"), out=out, seed=params.base.seed, log=log
    )
    gate = evaluate_mini_clip(out, pairs, min_ratio=cfg.min_gate_ratio)
    metrics = {"training": training, "gate": gate}
    return _finish("clip", metrics, started, catalogue, gate_failures(gate), log)


def run_sd(
    params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print
) -> dict:
    """Train the mini Stable Diffusion and check its prompt-match and colour gates."""
    from pmg.zoo.sd import evaluate_mini_sd, gate_failures, train_mini_sd

    catalogue = catalogue or Catalogue(params)
    cfg = params.zoo.sd
    started = time.perf_counter()
    pairs = _pairs(params, catalogue)
    out = catalogue.zoo("sd")
    training = train_mini_sd(cfg, pairs, out=out, seed=params.base.seed, log=log)
    gate = evaluate_mini_sd(out, catalogue.zoo("clip"), pairs, cfg, params.base.seed)
    metrics = {"training": training, "gate": gate}
    return _finish("sd", metrics, started, catalogue, gate_failures(gate), log)
