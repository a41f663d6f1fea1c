"""The whole pipeline on the `rehearsal` profile, end to end (issue 15, item 2).

Every stage of the stage table that the `rehearsal` profile runs goes through
the `pmg` command, in table order, over all scenarios — the commands
`dvc.yaml` runs (`tests/stages/test_stage_table.py` checks that they are the
table's) — on the full profile's architectures with random weights
(`rehearsal_dirs`, tests/conftest.py: LlamaForCausalLM, SD 1.5's
StableDiffusionPipeline, BLIP-2 with OPT, open_clip ViT-B-32) and a few users
per scenario, into tmp_path. Two stages are fixtures instead: `assets` (the
packaged archives from the download cache; its own command would also fetch
the mini profile's SmolLM2) and `rehearsal_models` (the folders, built once
per session by the function the stage runs).

Asserted: the loaders' classes (the full profile's, through the same code
path: no branch on the profile below the stages), the shapes at each
hand-over while the stages run (LLM width -> the soft projection -> 768, the
77-token conditions, `[E_m; E_k; E_t]`, the candidates' 64 px images), every
stage's declared outputs (`Catalogue.outputs`) with every table read back
through its pandera schema, and the report. Random weights make no sense of
content: the wiring is checked, not quality.
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from pmg import schemas
from pmg.cli import main
from pmg.config import load_params
from pmg.io import read_table
from pmg.stages.catalogue import HEADLINE, REPORT_INDEX, Catalogue
from pmg.stages.table import STAGES

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("mini", "full", "rehearsal")
#: Stages run by fixtures, not by their command (see the module docstring).
FIXTURE_STAGES = ("assets", "rehearsal_models")
#: The generator's text width and token count at the hand-over (SD 1.5's CLIPTextModel).
TEXT_WIDTH, TEXT_TOKENS = 768, 77
NUM_TOKENS = 4  # train_soft.num_tokens: L soft tokens of E_m


@pytest.fixture(scope="module")
def lpips_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LPIPS weights (converted to safetensors), through the real fetcher and the download cache."""
    from pmg.assets import DEFAULT_ASSETS, fetch_assets
    from pmg.config import AssetsConfig

    folder = tmp_path_factory.mktemp("lpips-assets")
    specs = [spec for spec in DEFAULT_ASSETS if spec.name == "lpips"]
    fetch_assets(
        AssetsConfig(folder=str(folder), download_cache=str(ROOT / ".asset-cache")), specs, log=lambda _: None
    )
    return folder / "lpips"


@pytest.fixture
def one_thread() -> Any:
    """Torch on one thread: the models are tiny, and a second thread only adds synchronisation.

    Measured on the shared 2-core machine: the `generate` stage of one scenario took
    20.7 CPU s with torch's default 2 threads and 7.9 s with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rehearsal_overrides(root: Path, assets: Path, lpips: Path, models: dict[str, Path]) -> dict[str, Any]:
    """The rehearsal profile on a few users per scenario, every output under `root`."""
    return {
        "base.profile": "rehearsal",
        "assets.folder": assets,
        "profiles.rehearsal.device": "cpu",
        **{f"profiles.rehearsal.{role}.path": folder for role, folder in models.items()},
        "profiles.rehearsal.lpips.path": lpips,
        "prepare.out": root / "prepared",
        "prepare.image_size": 32,
        "prepare.clothing.n_items": 60,
        "prepare.clothing.n_users": 8,
        "prepare.emoji.n_users": 10,
        "prepare.movies.max_users": 10,
        # A few users per scenario: shares that leave every split at least one of them (2+ test users).
        "prepare.user_split.validation": 0.2,
        "prepare.user_split.test": 0.3,
        "prepare.user_split.min_users": 1,
        "describe.out": root / "describe",
        "describe.max_users": 4,
        "describe.max_test_users": 2,  # clothing (adapter): 2 test users, then train and validation ones
        "describe.llm_cache": root / "cache",
        "keywords.out": root / "keywords",
        "keywords.llm_cache": root / "cache",
        "keywords.max_new_tokens": 6,
        "keywords.target_max_new_tokens": 6,
        "train_soft.out": root / "soft",
        "train_soft.scenarios": "[clothing]",  # one adapter scenario; movies and emoji run keywords only
        "train_soft.steps": 2,
        "train_soft.batch_size": 2,
        "train_soft.val_every": 2,
        "train_soft.val_draws": 1,
        "generate.out": root / "generate",
        "generate.steps": 2,
        "generate.weights": "[[0, 4], [2, 2], [4, 0]]",
        "select.out": root / "select",
        "evaluate.out": root / "evaluate",
        "evaluate.image_size": 32,
        "evaluate.ablations_out": root / "ablations",
        "evaluate.ablation_adapters": root / "soft_ablations",
        "report.out": root / "report",
        "report.grid_png": root / "gallery.png",
        "recommend.out": root / "recommend",
        "recommend.image_cache": root / "cache" / "preference_images",
    }


class HandOvers:
    """What the stages hand over, recorded by spies around the real functions (which still run)."""

    def __init__(self) -> None:
        self.loaded: dict[str, set[str]] = defaultdict(set)  # role -> class names
        self.llm_widths: set[int] = set()
        self.text: list[tuple[int, ...]] = []  # generator.encode_text outputs
        self.conditions: list[dict[str, Any]] = []  # build_conditions, per pair
        self.images: set[tuple[int, int]] = set()
        self.training: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()  # (latents, conditioning) shapes

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pmg.method.generate as method_generate
        import pmg.models.captioner
        import pmg.models.generator
        import pmg.models.llm
        import pmg.models.scorer

        def loader(module: Any, name: str, role: str, inner: str) -> None:
            original = getattr(module, name)

            def spy(*args: Any, **kwargs: Any) -> Any:
                loaded = original(*args, **kwargs)
                model = getattr(loaded, inner)
                self.loaded[role].add(type(model).__name__)
                if role == "llm":
                    self.llm_widths.add(model.config.hidden_size)
                return loaded

            monkeypatch.setattr(module, name, spy)

        loader(pmg.models.llm, "load_llm", "llm", "model")
        loader(pmg.models.generator, "load_generator", "generator", "pipeline")
        loader(pmg.models.captioner, "load_captioner", "captioner", "model")
        loader(pmg.models.scorer, "load_scorer", "scorer", "model")

        image_generator = pmg.models.generator.ImageGenerator
        encode_text, generate = image_generator.encode_text, image_generator.generate

        def encode_spy(generator: Any, texts: list[str]) -> torch.Tensor:
            out = encode_text(generator, texts)
            self.text.append(tuple(out.shape))
            return out

        def generate_spy(generator: Any, *args: Any, **kwargs: Any) -> list[Image.Image]:
            images = generate(generator, *args, **kwargs)
            self.images |= {image.size for image in images}
            return images

        monkeypatch.setattr(image_generator, "encode_text", encode_spy)
        monkeypatch.setattr(image_generator, "generate", generate_spy)

        build_conditions = method_generate.build_conditions

        def conditions_spy(request: Any, *, generator: Any, soft_model: Any, cfg: Any, seed: int) -> Any:
            prompt_embeds, negative, plan = build_conditions(
                request, generator=generator, soft_model=soft_model, cfg=cfg, seed=seed
            )
            record = {
                "scenario": request.scenario,
                "soft": cfg.use_soft,
                "keywords": cfg.use_keywords,
                "shape": tuple(prompt_embeds.shape),
                "negative": tuple(negative.shape),
                "concatenated": None,
            }
            both = [i for i, c in enumerate(plan) if c.w_p == c.w_t]
            if cfg.use_soft and cfg.use_keywords and both:
                # The equal-weight candidate's condition is [E_m; E_k; E_t], each made again here.
                prompt = request.behaviour_prompt
                soft = method_generate.soft_preference_embeddings(soft_model, prompt, generator)  # (L, D)
                texts = [request.target_text, request.preference_text, ""]
                target, keywords, _ = generator.encode_text(texts)  # (77, D) each
                expected = torch.cat([soft, keywords, target])
                record["soft_shape"] = tuple(soft.shape)
                record["concatenated"] = bool(torch.allclose(prompt_embeds[both[0]], expected, atol=1e-5))
            self.conditions.append(record)
            return prompt_embeds, negative, plan

        monkeypatch.setattr(method_generate, "build_conditions", conditions_spy)

        import pmg.method.train_soft as method_train_soft

        denoising_loss = method_train_soft._denoising_loss

        def loss_spy(generator: Any, scheduler: Any, latents: torch.Tensor, *rest: Any) -> torch.Tensor:
            *_, conditioning = rest  # noise, timesteps, conditioning (B, T, D)
            self.training.add((tuple(latents.shape[1:]), tuple(conditioning.shape[1:])))
            return denoising_loss(generator, scheduler, latents, *rest)

        monkeypatch.setattr(method_train_soft, "_denoising_loss", loss_spy)


def profile_branches(path: Path) -> list[str]:
    """Comparisons against a profile's name (`== "rehearsal"`, `in ("full", ...)`), and `.profile` reads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            values = [v for o in operands for v in _constants(o)]
            if set(values) & set(PROFILES):
                found.append(f"{path}:{node.lineno}: compares with a profile name")
        if isinstance(node, ast.Attribute) and node.attr == "profile" and "method" in path.parts:
            found.append(f"{path}:{node.lineno}: reads the profile")
    return found


def _constants(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for element in node.elts for v in _constants(element)]
    return []


def test_no_code_below_the_stages_branches_on_the_profile(tmp_path: Path) -> None:
    """The profiles differ by folders only: nothing in `pmg/` picks code by the profile's name.

    Only `pmg.gpu_check` (which profile to run) compares with a name; the
    method (`pmg/method`) does not even read the profile.
    """
    allowed = {ROOT / "pmg" / "gpu_check.py"}
    modules = [path for path in sorted((ROOT / "pmg").rglob("*.py")) if path not in allowed]
    assert len(modules) > 50
    found = [branch for path in modules for branch in profile_branches(path)]
    assert found == []
    # The check sees a branch where there is one.
    branch = tmp_path / "method" / "generate.py"
    branch.parent.mkdir()
    branch.write_text('if params.base.profile in ("full", "rehearsal"):\n    steps = 1\n', encoding="utf-8")
    assert [line.split(": ", 1)[1] for line in profile_branches(branch)] == [
        "compares with a profile name",
        "reads the profile",
    ]


def table_schema(stage: str, path: Path) -> Any:
    """The pandera schema of one table a stage writes."""
    by_stage = {"describe": schemas.Descriptions, "keywords": schemas.Keywords, "select": schemas.Scores}
    if stage in by_stage:
        return by_stage[stage]
    if path.name == "ground_truth.parquet":
        return schemas.GroundTruth if stage == "prepare" else schemas.GroundTruthHits
    by_name = {
        "items.parquet": schemas.Items,
        "interactions.parquet": schemas.Interactions,
        "conversations.parquet": schemas.Conversations,
        "splits.parquet": schemas.Splits,
        "report.parquet": schemas.PrepareReport,
        "candidates.parquet": schemas.Candidates,
        "scores.parquet": schemas.Scores,
        "pairs.parquet": schemas.PairMetrics,
        "issues.parquet": schemas.EvalIssues,
    }
    return by_name[path.name]


@pytest.mark.slow
def test_every_stage_on_the_rehearsal_profile(
    packaged_data_assets: Path,
    lpips_asset: Path,
    rehearsal_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    root = tmp_path / "data"
    sets = rehearsal_overrides(root, packaged_data_assets, lpips_asset, rehearsal_dirs)
    args = ["--params", str(ROOT / "params.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    monkeypatch.chdir(tmp_path)  # metrics/ and plots/ land under tmp_path
    seen = HandOvers()
    seen.install(monkeypatch)

    runs = [s for s in STAGES if s.profiles is None or "rehearsal" in s.profiles]
    stages = [s for s in runs if s.name not in FIXTURE_STAGES]
    names = [s.name for s in stages]
    assert set(names) >= {
        "prepare", "describe", "keywords", "train_soft", "train_soft_ablations",
        "generate", "select", "evaluate", "ablations", "report",
    }
    for spec in stages:
        assert main([*args, *spec.command]) == 0, spec.name

    # The full profile's classes, loaded by the real loaders (the profile changes folders, not code).
    assert dict(seen.loaded) == {
        "llm": {"LlamaForCausalLM"},
        "generator": {"StableDiffusionPipeline"},
        "captioner": {"Blip2ForConditionalGeneration"},
        "scorer": {"CLIP"},
    }
    (width,) = seen.llm_widths
    assert width < TEXT_WIDTH

    # LLM width -> the soft projection -> 768: the adapters train_soft and train_soft_ablations wrote.
    from safetensors.torch import load_file

    params = load_params(ROOT / "params.yaml", _yaml_values(sets))
    catalogue = Catalogue(params)
    llm = json.loads((rehearsal_dirs["llm"] / "config.json").read_text())
    adapters = [catalogue.adapter("clothing"), *sorted(catalogue.ablation_adapters("clothing").iterdir())]
    assert len(adapters) == 3  # the main one, L4 without prefix, L8 with prefix
    for folder in adapters:
        tensors = load_file(folder / "adapter.safetensors")
        assert tensors["projection.weight"].shape == (TEXT_WIDTH, width), folder
        n_tokens = tensors["token_embeddings"].shape[0]
        assert tensors["token_embeddings"].shape == (n_tokens, width) and n_tokens in (4, 8)
        if "prefix" in tensors:  # (layers, key/value, heads, S, head dim)
            heads = llm["num_attention_heads"]
            assert tensors["prefix"].shape == (llm["num_hidden_layers"], 2, heads, 4, width // heads)

    # Training: the 64 px supervision images as SD's 4 x 8 x 8 latents, conditioned on [E_m; E_k]
    # (L = 4, or 8 for the L8 ablation adapter) of width 768, and on E_k alone (the validation baseline).
    assert {latents for latents, _ in seen.training} == {(4, 8, 8)}
    assert {condition for _, condition in seen.training} == {
        (n + TEXT_TOKENS, TEXT_WIDTH) for n in (0, NUM_TOKENS, 8)
    }

    # The 77-token text conditions, and every generation's condition.
    assert {shape[1:] for shape in seen.text} == {(TEXT_TOKENS, TEXT_WIDTH)}
    by_kind = defaultdict(set)
    for record in seen.conditions:
        assert record["shape"] == record["negative"]
        by_kind[(record["scenario"], record["soft"], record["keywords"])].add(record["shape"][1:])
    candidates = len(params.generate.weights)
    pmg_condition = (NUM_TOKENS + 2 * TEXT_TOKENS, TEXT_WIDTH)  # [E_m; E_k; E_t]
    assert by_kind[("clothing", True, True)] >= {pmg_condition}
    assert by_kind[("movies", False, True)] == {(2 * TEXT_TOKENS, TEXT_WIDTH)}  # [E_k; E_t], no adapter
    assert {r["shape"][0] for r in seen.conditions} == {candidates}
    soft_runs = [r for r in seen.conditions if r["concatenated"] is not None]
    assert soft_runs and all(r["concatenated"] for r in soft_runs)
    assert {r["soft_shape"][1] for r in soft_runs} == {TEXT_WIDTH}
    # SD 1.5's VAE downsamples by 8: the rehearsal UNet's 8x8 latents are 64 px images.
    assert seen.images == {(64, 64)}

    # Every stage wrote what dvc.yaml declares, and every table reads back through its schema.
    read = defaultdict(int)
    for spec in stages:
        for scenario in params.base.scenarios if spec.per_scenario else [None]:
            for output in catalogue.outputs(spec.name, scenario):
                assert output.exists(), (spec.name, scenario, output)
                tables = sorted(output.rglob("*.parquet")) if output.is_dir() else [output]
                for table in (t for t in tables if t.suffix == ".parquet"):
                    frame = read_table(table, table_schema(spec.name, table))
                    read[spec.name] += 1
                    if spec.name in ("generate", "ablations") and table.name == "candidates.parquet":
                        for image in frame["image_path"]:
                            with Image.open(table.parent / image) as opened:
                                assert opened.size == (64, 64)
    assert set(read) == {
        "prepare", "describe", "keywords", "generate", "select", "evaluate", "ablations"
    }, read

    for scenario in params.base.scenarios:
        # Captions by BLIP-2 entered the descriptions; two test users were generated for and evaluated.
        lines = read_table(catalogue.descriptions(scenario), schemas.Descriptions)
        assert lines["source"].str.contains("caption").any(), scenario
        scores = read_table(catalogue.scores(scenario), schemas.Scores)
        assert scores.groupby(["user_id", "target_item"])["chosen"].sum().eq(1).all()
        assert scores["user_id"].nunique() == 2, scenario
        ablations = json.loads(catalogue.ablation_metrics(scenario).read_text())[scenario]
        assert "statistics_skipped" not in json.dumps(ablations), scenario

    # The report, over all scenarios, says which profile it ran on.
    html = (catalogue.report() / REPORT_INDEX).read_text(encoding="utf-8")
    assert "profile rehearsal" in html
    headline = (catalogue.report() / HEADLINE).read_text(encoding="utf-8")
    assert all(f"| {scenario} |" in headline for scenario in params.base.scenarios)
    assert catalogue.gallery_png().is_file()


def _yaml_values(sets: dict[str, Any]) -> dict[str, Any]:
    """The overrides as `--set` parses them (YAML values)."""
    import yaml

    return {key: yaml.safe_load(str(value)) for key, value in sets.items()}
