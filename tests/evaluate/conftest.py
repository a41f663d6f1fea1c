"""Fixtures of the evaluation tests: random LPIPS weights, tiny models, and one tiny pipeline run.

`pipeline_run` runs the real stages on the tiny world once per session:
generate + select (main run, PMG with a soft adapter) -> `run_evaluate`, and
`run_ablation_stage` over every variant — so the ablation, report and
browser tests read what the stages really wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from eval_helpers import (
    behaviour,
    build_world,
    keywords_frame,
    locations,
    make_params,
)  # tests/evaluate/ is on sys.path

from pmg.config import ModelSpec, Params
from pmg.evaluate.metrics import MetricModels, load_metric_models
from pmg.models import tiny


@pytest.fixture(scope="session")
def random_lpips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random LPIPS weights for both trunks (fast; real weights are tested apart)."""
    return tiny.save_random_lpips(tmp_path_factory.mktemp("lpips"), ("alex", "vgg"), seed=3)


@pytest.fixture(scope="session")
def metric_models(random_lpips_dir: Path) -> MetricModels:
    return load_metric_models(ModelSpec(kind="lpips", path=str(random_lpips_dir)), "cpu")


@dataclass
class PipelineRun:
    root: Path
    params: Params
    prepared: object
    metrics: dict
    ablations: dict


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, metric_models: MetricModels) -> PipelineRun:
    from pmg.evaluate.ablations import AblationModels, run_ablation_stage
    from pmg.evaluate.stage import run_evaluate
    from pmg.io import write_table
    from pmg.method.generate import run_generate
    from pmg.method.select import run_select
    from pmg.method.soft import SoftPreferenceModel, save_adapter
    from pmg.models.generator import ImageGenerator
    from pmg.models.llm import LocalLLM
    from pmg.models.scorer import load_scorer
    from pmg.schemas import Keywords, Scores

    root = tmp_path_factory.mktemp("run")
    params = make_params(root)
    prepared = build_world(root / "prepared")
    keywords = keywords_frame()
    write_table(keywords, root / "keywords" / "clothing.parquet", Keywords)

    tokenizer = tiny.tiny_llm_tokenizer()
    llm = LocalLLM(tiny.build_tiny_llama(tokenizer, seed=0), tokenizer, model_id="tiny")
    generator = ImageGenerator(tiny.build_tiny_sd_pipeline(seed=0))
    scorer = load_scorer(
        ModelSpec(kind="open_clip", name="pmg-tiny-clip", path=str(tiny.save_tiny_open_clip(root / "clip"))),
        "cpu",
    )
    width = generator.text_width
    for folder, num_tokens, use_prefix in (
        (root / "soft" / "clothing", 4, True),
        (root / "soft_ablations" / "clothing" / "no-prefix", 4, False),
        (root / "soft_ablations" / "clothing" / "eight", 8, True),
    ):
        save_adapter(
            SoftPreferenceModel(
                llm, width, num_tokens=num_tokens, prefix_length=4, use_prefix=use_prefix, seed=0
            ),
            folder,
        )

    # The main run: PMG (soft + keywords), as the generate / select stages do it.
    soft = SoftPreferenceModel.load(root / "soft" / "clothing", llm, text_width=width)
    candidates = run_generate(
        params, "clothing", keywords, behaviour(), generator=generator, soft_model=soft, items=prepared.items
    )
    scores = run_select(
        params, "clothing", candidates, scorer=scorer, candidates_dir=Path(params.generate.out) / "clothing"
    )
    write_table(scores, Path(params.select.out) / "clothing.parquet", Scores)
    metrics = run_evaluate(params, "clothing", metric_models=metric_models, locations=locations(root))

    models = AblationModels(generator=generator, scorer=scorer, metric_models=metric_models, llm=llm)
    ablations = run_ablation_stage(
        params, "clothing", models=models, keywords=keywords, behaviour=behaviour(), locations=locations(root)
    )
    return PipelineRun(root=root, params=params, prepared=prepared, metrics=metrics, ablations=ablations)
