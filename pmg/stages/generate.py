"""DVC stage `generate`: candidate images per (user, target) (PMG step 5).

Loads the profile's generator and, when `generate.use_soft` is on and the
scenario has a trained adapter, the soft preference model on the profile's
LLM; writes `<generate.out>/<scenario>/` (candidate PNGs, `candidates.parquet`,
`report.json`, swapped in whole) and `metrics/generate/<scenario>.json`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmg import schemas
from pmg.config import Params
from pmg.io import read_table, write_json_atomic
from pmg.stages import models

ADAPTER_CONFIG = "adapter_config.json"


def soft_model_for(
    params: Params, scenario: str, generator: Any, *, adapter_dir: Path | None = None, llm: Any | None = None
) -> Any | None:
    """The scenario's soft preference model, or None when it has no adapter.

    Args:
        adapter_dir: an adapter folder (default `<train_soft.out>/<scenario>`).
        llm: the already loaded base LLM (default: load the profile's).
    """
    from pmg.method.soft import SoftPreferenceModel

    folder = adapter_dir or Path(params.train_soft.out) / scenario
    if not (folder / ADAPTER_CONFIG).is_file():
        return None
    return SoftPreferenceModel.load(folder, llm or models.llm(params), text_width=generator.text_width)


def generate_scenario(
    params: Params,
    scenario: str,
    *,
    generator: Any,
    soft_model: Any | None,
    out_dir: Path,
    keywords: Any | None = None,
    descriptions: Any | None = None,
    items: Any | None = None,
) -> Any:
    """Run `run_generate` on the scenario's keywords and descriptions into `out_dir`.

    `keywords` / `descriptions` default to the stage tables
    (`<keywords.out>`, `<describe.out>`); `pmg personalize` passes its own
    one-pair tables and the catalogue `items` holding its target.
    """
    from pmg.method.generate import behaviour_prompts, run_generate

    if keywords is None:
        keywords = read_table(Path(params.keywords.out) / f"{scenario}.parquet", schemas.Keywords)
    if descriptions is None:
        descriptions = read_table(Path(params.describe.out) / f"{scenario}.parquet", schemas.Descriptions)
    if soft_model is None and params.generate.use_soft:
        # No adapter for this scenario (see train_soft.scenarios): keywords only.
        params = params.model_copy(update={"generate": params.generate.model_copy(update={"use_soft": False})})
    return run_generate(
        params,
        scenario,
        keywords,
        behaviour_prompts(descriptions, scenario),
        generator=generator,
        soft_model=soft_model,
        out_dir=out_dir,
        items=items,
    )


def run(
    params: Params, scenario: str, *, metrics_dir: Path = Path("metrics/generate"), log: Callable[[str], object] = print
) -> dict:
    """Generate every candidate of one scenario; return the stage metrics."""
    generator = models.generator(params)
    soft_model = soft_model_for(params, scenario, generator) if params.generate.use_soft else None
    frame = generate_scenario(params, scenario, generator=generator, soft_model=soft_model, out_dir=Path(params.generate.out))
    metrics = {"soft_embeddings": soft_model is not None, **dict(frame.attrs.get("report", {}))}
    write_json_atomic(metrics_dir / f"{scenario}.json", metrics)
    log(f"generate {scenario}: {metrics}")
    return metrics
