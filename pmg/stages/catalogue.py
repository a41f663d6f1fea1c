"""Where every stage reads and writes: the one place paths are built.

A :class:`Catalogue` is made from `Params` (plus the roots of the metrics and
plots folders, `metrics/` and `plots/` beside `dvc.yaml` by default) and
names every artefact of the pipeline, per scenario where it is per scenario.
The stages, the CLI, the Prefect flows and the report all ask it; no other
module joins a configured folder with a scenario or a file name.
:meth:`Catalogue.outputs` lists what each stage of the stage table
(`pmg.stages.table`) writes, which is what `dvc.yaml` declares and what the
Prefect tasks check before trusting a cached result.

Paths are returned as given in `params.yaml` (relative to the working
directory when relative), never resolved, so they read the same in tables,
metrics and messages on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pmg.config import Params

#: File names inside the stages' output folders.
CANDIDATES_TABLE = "candidates.parquet"
GENERATE_REPORT = "report.json"
SCORES_TABLE = "scores.parquet"
PAIRS_TABLE = "pairs.parquet"
ISSUES_TABLE = "issues.parquet"
GROUND_TRUTH_TABLE = "ground_truth.parquet"
ABLATIONS_MARKDOWN = "ablations.md"
ABLATIONS_REPORT = "report.json"
REPORT_INDEX = "index.html"
HEADLINE = "headline.md"
POSTER_FEATURES = "poster_features.npz"
GENERATED_USER_FEATURES = "generated_user_features.npz"
RECOMMEND_USER_METRICS = "user_metrics.parquet"
RECOMMEND_RUNS = "runs.csv"
RECOMMEND_TABLE = "table4.md"


@dataclass(frozen=True)
class Catalogue:
    """Every stage's inputs and outputs for one `Params`.

    Attributes:
        params: the run's parameters (the `out` folders come from them).
        metrics_root: the project's metrics folder (DVC metrics, `cache: false`).
        plots_root: the project's plots folder (DVC plots).
        personalize_root: where `pmg personalize` puts each pair's outputs.
    """

    params: Params
    metrics_root: Path = Path("metrics")
    plots_root: Path = Path("plots")
    personalize_root: Path = Path("data/personalize")

    # ------------------------------------------------------------ assets

    def assets(self) -> Path:
        """The extracted assets folder (`assets.folder`), with `manifest.json`."""
        return Path(self.params.assets.folder)

    def asset(self, name: str) -> Path:
        """One extracted asset (`ml-100k`, `smollm2`, `lpips`, ...)."""
        return self.assets() / name

    # ----------------------------------------------------------- prepare

    def prepared(self, scenario: str) -> Path:
        """The prepared scenario folder (`pmg.data.store` layout)."""
        return Path(self.params.prepare.out) / scenario

    # --------------------------------------------------------------- zoo

    def zoo(self, part: str) -> Path:
        """A mini zoo model folder: `llm`, `clip` or `sd`."""
        zoo = self.params.zoo
        return Path({"llm": zoo.llm_out, "clip": zoo.clip.out, "sd": zoo.sd.out}[part])

    # --------------------------------------------------------- rehearsal

    def rehearsal_models(self) -> list[Path]:
        """The rehearsal profile's model folders (`rehearsal.profile`'s llm, generator, captioner, scorer)."""
        profile = self.params.profiles[self.params.rehearsal.profile]
        return [Path(getattr(profile, role).path) for role in ("llm", "generator", "captioner", "scorer")]

    def rehearsal_metrics(self) -> Path:
        """The rehearsal build's facts: `metrics/models/rehearsal.json`."""
        return self.metrics("models", "rehearsal")

    # ---------------------------------------------------- describe, keywords

    def descriptions(self, scenario: str) -> Path:
        """The `Descriptions` table."""
        return Path(self.params.describe.out) / f"{scenario}.parquet"

    def keywords(self, scenario: str) -> Path:
        """The `Keywords` table."""
        return Path(self.params.keywords.out) / f"{scenario}.parquet"

    # ------------------------------------------------------------ adapters

    def adapter(self, scenario: str) -> Path:
        """The scenario's soft preference adapter folder (empty when it trains none)."""
        return Path(self.params.train_soft.out) / scenario

    def ablation_adapters(self, scenario: str) -> Path:
        """The folder of the extra adapters the ablations need, one sub-folder per key."""
        return Path(self.params.evaluate.ablation_adapters) / scenario

    def ablation_adapter(self, scenario: str, key: str) -> Path:
        """One extra ablation adapter (`L8-prefix`, `L4-noprefix`, ...)."""
        return self.ablation_adapters(scenario) / key

    # ------------------------------------------------------ generate, select

    def candidates(self, scenario: str) -> Path:
        """The main run's candidates folder: PNGs, `candidates.parquet`, `report.json`."""
        return Path(self.params.generate.out) / scenario

    def scores(self, scenario: str) -> Path:
        """The main run's `Scores` table."""
        return Path(self.params.select.out) / f"{scenario}.parquet"

    # ------------------------------------------------------------ evaluate

    def evaluation(self, scenario: str) -> Path:
        """The evaluation folder: `pairs.parquet`, `issues.parquet`, `ground_truth.parquet`."""
        return Path(self.params.evaluate.out) / scenario

    def weights_csv(self, scenario: str) -> Path:
        """The weight case study, long format (a DVC plot)."""
        return self.plots_root / "evaluate" / f"{scenario}_weights.csv"

    def weights_svg(self, scenario: str) -> Path:
        """The weight case study as a small chart."""
        return self.plots_root / "evaluate" / f"{scenario}_weights.svg"

    # ----------------------------------------------------------- ablations

    def ablations(self, scenario: str) -> Path:
        """The ablation folder: `results/` and `runs/`."""
        return Path(self.params.evaluate.ablations_out) / scenario

    def ablation_results(self, scenario: str) -> Path:
        """The ablation results, one set committed whole: `pairs.parquet`, `issues.parquet`,
        `ground_truth.parquet`, `ablations.md`, `report.json`."""
        return self.ablations(scenario) / "results"

    def ablation_run(self, scenario: str, run: str) -> Path:
        """One ablation run's candidates folder (`runs/<run>/<scenario>/`, as the main run's)."""
        return self.ablations(scenario) / "runs" / run / scenario

    def ablation_metrics(self, scenario: str) -> Path:
        """`{scenario: {variant: {metric: value}}}`."""
        return self.metrics_root / "ablations" / f"{scenario}.json"

    def ablation_ground_truth(self, scenario: str) -> Path:
        """`{scenario: {variant or keyword source: {check: rate}}}`."""
        return self.metrics_root / "ablations" / f"{scenario}_ground_truth.json"

    # ----------------------------------------------------------- recommend

    def preference_images(self, scenario: str) -> Path:
        """The preference-only images' CLIP features (`generated_user_features.npz`)."""
        return Path(self.params.recommend.out) / "preference_images" / scenario

    def preference_image_cache(self) -> Path:
        """The preference-only PNGs by content key (not a DVC output: kept across runs)."""
        return Path(self.params.recommend.image_cache)

    def recommendation(self, scenario: str) -> Path:
        """The recommendation folder: poster features, per-user metrics, runs, Table 4."""
        return Path(self.params.recommend.out) / scenario

    def recommend_curves(self, scenario: str) -> Path:
        """MMGCN's training curves, every setting and seed (a DVC plot)."""
        return self.plots_root / "recommend" / f"{scenario}.csv"

    # -------------------------------------------------------------- report

    def report(self) -> Path:
        """The report folder: `index.html`, `headline.md`."""
        return Path(self.params.report.out)

    def gallery_png(self) -> Path:
        """The README's PNG grid (in git, not in the DVC cache)."""
        return Path(self.params.report.grid_png)

    # ------------------------------------------------- metrics, plots, timings

    def metrics(self, stage: str, scenario: str | None = None) -> Path:
        """A stage's DVC metrics: `metrics/<stage>/<scenario>.json`, or `metrics/<stage>.json`."""
        if scenario is None:
            return self.metrics_root / f"{stage}.json"
        return self.metrics_root / stage / f"{scenario}.json"

    def zoo_metrics(self, part: str) -> Path:
        """A zoo build's figures and gate: `metrics/zoo/<part>.json`."""
        return self.metrics(ZOO, part)

    def train_soft_curve(self, scenario: str) -> Path:
        """The adapter's training curve (a DVC plot)."""
        return self.plots_root / "train_soft" / f"{scenario}.csv"

    def timings(self, stage: str, scenario: str | None = None) -> Path:
        """A stage run's wall time and peak memory: `metrics/timings/<stage>[/<scenario>].json`."""
        if scenario is None:
            return self.metrics_root / "timings" / f"{stage}.json"
        return self.metrics_root / "timings" / stage / f"{scenario}.json"

    # --------------------------------------------------------- personalize

    def personalized(self, scenario: str, user: str, target: str) -> Path:
        """One `pmg personalize` pair's candidates folder (with its `scores.parquet`)."""
        return self.personalize_root / f"{scenario}-{user}-{target}" / scenario

    # ------------------------------------------------- stage inputs, outputs

    def _model(self, part: str) -> list[Path]:
        """The profile's model folder for `part` (`llm`, `soft_llm`, ...), when it names a local path."""
        profile = self.params.profile
        spec = getattr(profile, part) if part != "soft_llm" else (profile.soft_llm or profile.llm)
        return [Path(spec.path)] if spec.path and spec.kind != "openai" else []

    def inputs(self, stage: str, scenario: str | None = None) -> list[Path]:
        """What a stage of the stage table reads besides `params.yaml` and code (as `dvc.yaml` declares it).

        Model folders are the selected profile's (the `mini` profile's are
        the zoo's outputs); package registries (`assets`) are not paths.

        Raises:
            KeyError: an unknown stage.
        """
        from pmg.scenarios import all_scenarios

        s = scenario
        rs = self.params.recommend.scenario
        prepare_assets = list(dict.fromkeys(a for spec in all_scenarios() for a in spec.assets))
        inputs = {
            "assets": lambda: [],
            "prepare": lambda: [self.asset(a) for a in prepare_assets],
            "zoo_llm": lambda: [self.asset("smollm2")],
            "zoo_clip": lambda: [self.asset("minilm"), Path(self.params.prepare.out)],
            "zoo_sd": lambda: [self.zoo("clip"), Path(self.params.prepare.out)],
            "rehearsal_models": lambda: [],
            "describe": lambda: [self.prepared(s), *self._model("llm"), *self._model("captioner")],
            "keywords": lambda: [self.descriptions(s), self.prepared(s), *self._model("llm")],
            "train_soft": lambda: [
                self.descriptions(s),
                self.keywords(s),
                self.prepared(s),
                *self._model("soft_llm"),
                *self._model("generator"),
            ],
            "generate": lambda: [
                self.keywords(s),
                self.descriptions(s),
                self.prepared(s),
                self.adapter(s),
                *self._model("soft_llm"),
                *self._model("generator"),
            ],
            "select": lambda: [self.candidates(s), *self._model("scorer")],
            "evaluate": lambda: [
                self.candidates(s),
                self.scores(s),
                self.keywords(s),
                self.prepared(s),
                *self._model("lpips"),
            ],
            "train_soft_ablations": lambda: [
                self.descriptions(s),
                self.keywords(s),
                self.prepared(s),
                *self._model("soft_llm"),
                *self._model("generator"),
            ],
            "ablations": lambda: [
                self.adapter(s),
                self.ablation_adapters(s),
                self.keywords(s),
                self.descriptions(s),
                self.prepared(s),
                *self._model("soft_llm"),
                *self._model("generator"),
                *self._model("scorer"),
                *self._model("lpips"),
            ],
            "preference_images": lambda: [
                self.keywords(rs),
                self.descriptions(rs),
                self.adapter(rs),
                *self._model("soft_llm"),
                *self._model("generator"),
                *self._model("scorer"),
            ],
            "recommend": lambda: [self.prepared(rs), self.preference_images(rs), *self._model("scorer")],
            "report": lambda: [
                Path(self.params.prepare.out),
                Path(self.params.keywords.out),
                Path(self.params.generate.out),
                Path(self.params.select.out),
                Path(self.params.evaluate.out),
                Path(self.params.evaluate.ablations_out),
                self.metrics_root / "evaluate",
                self.metrics_root / "ablations",
                self.plots_root / "evaluate",
            ],
        }
        return list(dict.fromkeys(inputs[stage]()))

    def outputs(self, stage: str, scenario: str | None = None) -> list[Path]:
        """What a stage of the stage table writes (as `dvc.yaml` declares it).

        Args:
            stage: a stage name (`prepare`, `zoo_clip`, `describe`, ...).
            scenario: the scenario, for stages run per scenario.

        Raises:
            KeyError: an unknown stage.
        """
        s = scenario
        rs = self.params.recommend.scenario
        timing = [self.timings(stage, s)]
        outputs = {
            "assets": lambda: [self.assets()],
            "prepare": lambda: [self.prepared(s), self.metrics("prepare", s)],
            "zoo_llm": lambda: [self.zoo("llm"), self.zoo_metrics("llm")],
            "zoo_clip": lambda: [self.zoo("clip"), self.zoo_metrics("clip")],
            "zoo_sd": lambda: [self.zoo("sd"), self.zoo_metrics("sd")],
            "rehearsal_models": lambda: [*self.rehearsal_models(), self.rehearsal_metrics()],
            "describe": lambda: [self.descriptions(s), self.metrics("describe", s)],
            "keywords": lambda: [self.keywords(s), self.metrics("keywords", s)],
            "train_soft": lambda: [self.adapter(s), self.metrics("train_soft", s), self.train_soft_curve(s)],
            "generate": lambda: [self.candidates(s), self.metrics("generate", s)],
            "select": lambda: [self.scores(s), self.metrics("select", s)],
            # The chart beside the plot (weights_svg) is kept in git, not declared to DVC.
            "evaluate": lambda: [self.evaluation(s), self.metrics("evaluate", s), self.weights_csv(s)],
            "train_soft_ablations": lambda: [self.ablation_adapters(s), self.metrics("train_soft_ablations", s)],
            "ablations": lambda: [self.ablations(s), self.ablation_metrics(s), self.ablation_ground_truth(s)],
            "preference_images": lambda: [self.preference_images(rs), self.metrics("preference_images", rs)],
            "recommend": lambda: [
                self.recommendation(rs),
                self.metrics("recommend", rs),
                self.recommend_curves(rs),
            ],
            "report": lambda: [self.report(), self.gallery_png(), self.metrics("report")],
        }
        return outputs[stage]() + timing


ZOO = "zoo"
