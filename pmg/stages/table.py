"""The stage table: the one list of the pipeline's stages.

`STAGES` (in pipeline order, as `dvc repro` runs them) drives the `pmg`
subcommands (`pmg.cli`), the Prefect pipeline (`flows.tasks`,
`flows.pipeline`: the same stages, the same `gpu` tags) and the test that
checks `dvc.yaml` against it (each stage's `cmd`, and its `deps` holding
every `pmg` module the stage runs, computed by `pmg.stages.deps`).

`run_stage` is the one place a stage runs for the CLI and for Prefect: it
records the run's wall time, CPU time and peak memory in
`metrics/timings/<stage>/<scenario>.json` (`metrics/timings/<stage>.json` for
stages over all scenarios), which `dvc.yaml` declares as metrics.

Peak memory: the process's resident-set high-water mark since the stage
started (Linux `VmHWM`, reset through `/proc/self/clear_refs`); where it
cannot be reset, the process's peak so far (`ru_maxrss`), an upper bound.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pmg.config import Params
from pmg.errors import ConfigError
from pmg.io import write_json_atomic
from pmg.stages import (
    ablations,
    assets,
    describe,
    evaluate,
    generate,
    keywords,
    prepare,
    report,
    select,
    train_soft,
    train_soft_ablations,
    zoo,
)
from pmg.stages.catalogue import Catalogue


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: the DVC stage name (`dvc.yaml`), also the Prefect task name.
        run: the stage function; per-scenario stages take `(params, scenario,
            *, catalogue, log)`, the others `(params, *, catalogue, log)`;
            both return the stage's metrics (a JSON-able dict).
        command: the `pmg` command words (`("describe",)`, `("zoo", "clip")`);
            per-scenario stages add `--scenario <scenario>`.
        help: one line for `pmg --help`.
        per_scenario: run once per scenario of `base.scenarios`.
        gpu: tagged `gpu` in Prefect (concurrency-limited; routed to GPU workers).
        profiles: run by default only under these profiles (None: all).
        show: what `pmg <command>` prints of the result besides the stage's
            own log lines (None: nothing).
    """

    name: str
    run: Callable[..., dict]
    command: tuple[str, ...]
    help: str
    per_scenario: bool = True
    gpu: bool = False
    profiles: tuple[str, ...] | None = None
    show: Callable[[dict], None] | None = None

    @property
    def cmd(self) -> str:
        """The `dvc.yaml` command (`${item}` is the scenario of a `foreach` stage)."""
        return " ".join(("pmg", *self.command, *(("--scenario", "${item}") if self.per_scenario else ())))


#: The pipeline in order (DESIGN.md §2). The mini profile builds its model zoo
#: from the prepared default world before the models are first used.
STAGES: tuple[Stage, ...] = (
    Stage(
        "assets",
        assets.run,
        ("assets", "fetch"),
        "download, verify (sha256) and extract every asset",
        per_scenario=False,
    ),
    Stage("prepare", prepare.run, ("prepare",), "canonical, validated tables per scenario"),
    Stage(
        "zoo_llm",
        zoo.run_llm,
        ("zoo", "llm"),
        "convert the packaged SmolLM2 GGUF into the mini LLM",
        per_scenario=False,
        profiles=("mini",),
    ),
    Stage(
        "zoo_clip",
        zoo.run_clip,
        ("zoo", "clip"),
        "train the mini CLIP on the default world",
        per_scenario=False,
        gpu=True,
        profiles=("mini",),
    ),
    Stage(
        "zoo_sd",
        zoo.run_sd,
        ("zoo", "sd"),
        "train the mini Stable Diffusion on the default world",
        per_scenario=False,
        gpu=True,
        profiles=("mini",),
    ),
    Stage("describe", describe.run, ("describe",), "behaviour to text (history lines, conversation lines, target)"),
    Stage("keywords", keywords.run, ("keywords",), "preference and target keywords, through the LLM answer cache"),
    Stage("train_soft", train_soft.run, ("train_soft",), "train the soft preference adapter (P-Tuning v2)", gpu=True),
    Stage("generate", generate.run, ("generate",), "candidate images per (user, target) and weight pair", gpu=True),
    Stage("select", select.run, ("select",), "CLIP scores and the best candidate per pair"),
    Stage(
        "evaluate",
        evaluate.run,
        ("evaluate",),
        "LPIPS / SSIM against history and target, ground truth, weight case study",
        gpu=True,
    ),
    Stage(
        "train_soft_ablations",
        train_soft_ablations.run,
        ("train_soft_ablations",),
        "train the extra adapters of the ablations (L, prefix off)",
        gpu=True,
    ),
    Stage(
        "ablations",
        ablations.run,
        ("ablations",),
        "every ablation variant on the same pairs and seeds",
        gpu=True,
    ),
    Stage(
        "report",
        report.run,
        ("report",),
        "the self-contained HTML report over all scenarios",
        per_scenario=False,
        show=report.show,
    ),
)
STAGES_BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}


def stage(name: str) -> Stage:
    """The stage called `name`.

    Raises:
        ConfigError: no such stage (the message lists them).
    """
    try:
        return STAGES_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; the pipeline's stages are {list(STAGES_BY_NAME)}") from None


# ------------------------------------------------------------------- running


def _reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux >= 4.0); whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset: bool) -> float:
    if reset:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
        except (OSError, ValueError, IndexError):
            pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def run_stage(
    spec: Stage,
    params: Params,
    scenario: str | None = None,
    *,
    catalogue: Catalogue | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """Run one stage (for one scenario when it runs per scenario) and record its timing.

    Returns:
        The stage's metrics. Its wall time, CPU time and peak memory go to
        `catalogue.timings(stage, scenario)` once it succeeded.

    Raises:
        ConfigError: a per-scenario stage without a scenario, or one with it
            for a stage over all scenarios.
    """
    catalogue = catalogue or Catalogue(params)
    if spec.per_scenario and scenario is None:
        raise ConfigError(f"stage {spec.name!r} runs per scenario: give a scenario")
    if not spec.per_scenario and scenario is not None:
        raise ConfigError(f"stage {spec.name!r} runs over all scenarios: give no scenario")
    reset = _reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if spec.per_scenario:
        metrics = spec.run(params, scenario, catalogue=catalogue, log=log)
    else:
        metrics = spec.run(params, catalogue=catalogue, log=log)
    after = resource.getrusage(resource.RUSAGE_SELF)
    timing = {
        "stage": spec.name,
        "scenario": scenario,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime, 2),
        "peak_rss_mib": _peak_rss_mib(reset),
        "peak_rss_since_stage_start": reset,
    }
    write_json_atomic(catalogue.timings(spec.name, scenario), timing)
    return metrics
