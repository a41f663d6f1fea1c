"""DVC stages `zoo_llm`, `zoo_clip`, `zoo_sd`: the mini model zoo of the `mini` profile.

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

SMOLLM2_GGUF = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class GateError(PMGError):
    """A zoo model missed its quality gate."""


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _finish(name: str, metrics: dict, started: float, metrics_dir: Path, failures: list[str], log) -> dict:
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    metrics["peak_rss_mib"] = _peak_rss_mib()
    metrics["gate_passed"] = not failures
    write_json_atomic(metrics_dir / f"{name}.json", metrics)
    log(f"zoo {name}: {metrics['wall_seconds']} s, peak {metrics['peak_rss_mib']} MiB, gate {'passed' if not failures else 'MISSED'}")
    if failures:
        raise GateError(f"zoo {name} missed its quality gate:\n  " + "\n  ".join(failures))
    return metrics


def run_llm(params: Params, *, metrics_dir: Path = Path("metrics/zoo"), log: Callable[[str], object] = print) -> dict:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into `zoo.llm_out`."""
    from pmg.models.llm import convert_gguf_to_hf

    started = time.perf_counter()
    out = convert_gguf_to_hf(Path(params.assets.folder) / SMOLLM2_GGUF, params.zoo.llm_out, key="zoo.llm_out")
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    return _finish("llm", {"size_mib": round(size / 2**20, 1)}, started, metrics_dir, [], log)


def run_clip(params: Params, *, metrics_dir: Path = Path("metrics/zoo"), log: Callable[[str], object] = print) -> dict:
    """Train the mini CLIP on the default world and check its zero-shot gate."""
    from pmg.zoo.clip import evaluate_mini_clip, gate_failures, train_mini_clip
    from pmg.zoo.pairs import load_pairs

    cfg = params.zoo.clip
    started = time.perf_counter()
    pairs = load_pairs(params.prepare.out, params.base.scenarios, heldout_fraction=cfg.heldout_fraction)
    training = train_mini_clip(
        cfg, pairs, text_tower=Path(params.assets.folder) / "minilm", out=Path(cfg.out), seed=params.base.seed, log=log
    )
    gate = evaluate_mini_clip(cfg.out, pairs, min_ratio=cfg.min_gate_ratio)
    metrics = {"training": training, "gate": gate}
    return _finish("clip", metrics, started, metrics_dir, gate_failures(gate), log)


def run_sd(params: Params, *, metrics_dir: Path = Path("metrics/zoo"), log: Callable[[str], object] = print) -> dict:
    """Train the mini Stable Diffusion and check its prompt-match and colour gates."""
    from pmg.zoo.pairs import load_pairs
    from pmg.zoo.sd import evaluate_mini_sd, gate_failures, train_mini_sd

    cfg = params.zoo.sd
    started = time.perf_counter()
    pairs = load_pairs(params.prepare.out, params.base.scenarios, heldout_fraction=params.zoo.clip.heldout_fraction)
    training = train_mini_sd(cfg, pairs, out=Path(cfg.out), seed=params.base.seed, log=log)
    gate = evaluate_mini_sd(cfg.out, params.zoo.clip.out, pairs, cfg, params.base.seed)
    metrics = {"training": training, "gate": gate}
    return _finish("sd", metrics, started, metrics_dir, gate_failures(gate), log)
