"""Fixtures of the evaluation tests: random LPIPS weights, tiny models, and one tiny pipeline run.

`pipeline_run` runs the real stage functions on the tiny world once per
session: `generate_into` + `select_in` (main run, PMG with a soft adapter) ->
the `evaluate` stage, and the `ablations` stage over every variant — so the
ablation, report and browser tests read what the stages really wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from eval_helpers import (
    behaviour,
    build_world,
    catalogue,
    descriptions_frame,
    keywords_frame,
    load_metric_models,
    make_params,
)  # tests/evaluate/ is on sys.path

from pmg.config import ModelSpec, Params
from pmg.evaluate.metrics import MetricModels
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
    from pmg.io import write_table
    from pmg.method.soft import SoftPreferenceModel, save_adapter
    from pmg.models.generator import ImageGenerator
    from pmg.models.llm import LocalLLM
    from pmg.models.scorer import load_scorer
    from pmg.schemas import Descriptions, Keywords, Scores
    from pmg.stages import ablations as ablation_stage
    from pmg.stages import evaluate as evaluate_stage
    from pmg.stages.generate import generate_into
    from pmg.stages.select import select_in

    root = tmp_path_factory.mktemp("run")
    params = make_params(root)
    where = catalogue(params, root)
    prepared = build_world(root / "prepared")
    keywords = keywords_frame()
    write_table(keywords, where.keywords("clothing"), Keywords)
    write_table(descriptions_frame(), where.descriptions("clothing"), Descriptions)

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

    # The main run: PMG (soft + keywords), through the generate / select stages' functions.
    soft = SoftPreferenceModel.load(root / "soft" / "clothing", llm, text_width=width)
    folder = where.candidates("clothing")
    candidates, _ = generate_into(
        folder,
        params.generate,
        "clothing",
        keywords,
        behaviour(),
        prepared.items,
        generator=generator,
        soft_model=soft,
        seed=params.base.seed,
    )
    scores, _ = select_in(folder, params.select, "clothing", candidates, scorer=scorer)
    write_table(scores, where.scores("clothing"), Scores)
    quiet = lambda _: None  # noqa: E731
    metrics = evaluate_stage.run(params, "clothing", catalogue=where, metric_models=metric_models, log=quiet)

    models = ablation_stage.AblationModels(
        generator=generator, scorer=scorer, metric_models=metric_models, soft_base=llm
    )
    ablations = ablation_stage.run(params, "clothing", catalogue=where, models=models, log=quiet)
    return PipelineRun(root=root, params=params, prepared=prepared, metrics=metrics, ablations=ablations)
