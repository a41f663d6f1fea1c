"""Fault injection: kill stages with SIGKILL at random points, run copies at once, check what is left.

Issue 16 asks for proof that no fault loses or mixes an output. On a tiny
config (the packaged data assets, 60 clothing items, 8 users, seeded tiny
random models: a 2-layer Llama, a 32/64-channel SD, a tiny open_clip) every
stage of the chain `prepare -> describe -> keywords -> generate -> select`
runs as the `pmg` command in a subprocess, as DVC and Prefect run it
(`train_soft` is left out: ~20 s a run here, over the suite's 5-minute
budget; with `train_soft.scenarios` empty, generation is keywords only):

1. a **clean run**, whose data outputs (`Catalogue.outputs`, metrics and
   timings left out: those hold wall times) are hashed file by file;
2. **kills**: the stage is started again and killed with SIGKILL (its whole
   process group) at a seeded random moment between 30% and 100% of its
   clean wall time (a kill that comes after the process ended is not
   counted, and another is drawn); after each kill every committed output
   of the stage must validate;
3. the **next clean run** after the kills (the first concurrent trial where
   the stage has one, else a single rerun) must succeed, leave no leftover
   (`.<name>.*.staging`, `.old`, `.lock`, `.tmp` anywhere under the scratch
   folder: beside outputs, in metrics, in the LLM cache) and reproduce the
   clean run's bytes;
4. **concurrent trials**: 2 or 3 copies of the stage started within half a
   second of each other; every copy must succeed (they take turns on the
   output's lock), and the output must validate, match the clean bytes and
   leave nothing behind.

"Validates" means: tables read back with their pandera schemas
(`pmg.io.read_table`, `pmg.data.store.read_scenario`, which also checks the
images exist), every candidate image named by `candidates.parquet` opens,
an adapter's config parses and its safetensors load, JSON files parse.

Prints kills, concurrent trials, corrupt outputs found, leftovers, byte
mismatches and failed runs (targets: 0), and the seconds taken.
`tests/test_faults.py` runs it within `make test` and asserts the targets.

    python benchmarks/faults.py --seed 0            # scratch in a temporary folder
    python benchmarks/faults.py --root /tmp/faults --stages prepare describe
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = "clothing"
STAGES = ("prepare", "describe", "keywords", "generate", "select")

#: (kills, concurrent trials) per stage: 20 kills and 10 trials in all. `prepare`
#: takes a second and runs no model, so it takes most of them; each other stage
#: pays ~7 s of imports (torch, diffusers, open_clip) per run.
DEFAULT_PLAN: dict[str, tuple[int, int]] = {
    "prepare": (12, 8),
    "describe": (2, 0),
    "keywords": (2, 0),
    "generate": (2, 1),
    "select": (2, 1),
}

#: What a killed or concurrent writer can leave beside a file or folder `name`:
#: `.name.lock`, `.name.<mkstemp/mkdtemp 8 chars>[.staging|.old|.pull|.tmp]`.
LEFTOVER = re.compile(r"\..+\.(?:lock|staging|old|pull|tmp)|\..+\.[a-z0-9_]{8}")


@dataclass
class Figures:
    """What the suite found (targets: every list empty)."""

    kills: int = 0
    kills_missed: int = 0
    concurrent_trials: int = 0
    concurrent_runs: int = 0
    corrupt: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    per_stage: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"kills (SIGKILL at a random point):   {self.kills}"
            + (f" (+{self.kills_missed} that came after the run ended)" if self.kills_missed else ""),
            f"concurrent trials (2-3 copies):      {self.concurrent_trials} ({self.concurrent_runs} runs)",
            f"corrupt committed outputs found:     {len(self.corrupt)}",
            f"leftovers after the next clean run:  {len(self.leftovers)}",
            f"byte mismatches with the clean run:  {len(self.mismatches)}",
            f"failed runs:                         {len(self.failed_runs)}",
            f"seconds:                             {self.seconds:.1f} wall, {self.cpu_seconds:.1f} CPU",
        ]
        for name, kinds in (
            ("corrupt", self.corrupt),
            ("leftover", self.leftovers),
            ("mismatch", self.mismatches),
            ("failed", self.failed_runs),
        ):
            lines += [f"  {name}: {entry}" for entry in kinds[:10]]
        return "\n".join(lines)


# ----------------------------------------------------------------- the config


def overrides(root: Path, assets: Path) -> dict[str, object]:
    """The tiny config, as `pmg --set` overrides: every output under `root`."""
    return {
        "assets.folder": assets,
        "prepare.out": root / "prepared",
        "prepare.image_size": 32,
        "prepare.clothing.n_items": 60,
        "prepare.clothing.n_users": 8,
        # A few users: shares that leave every split at least one of them.
        "prepare.user_split.validation": 0.2,
        "prepare.user_split.test": 0.3,
        "prepare.user_split.min_users": 1,
        "profiles.mini.device": "cpu",
        "profiles.mini.llm.path": root / "models" / "llm",
        "profiles.mini.generator.path": root / "models" / "sd",
        "profiles.mini.scorer.path": root / "models" / "clip",
        "profiles.mini.captioner.path": root / "models" / "clip",
        "describe.out": root / "describe",
        "describe.max_users": 4,
        "describe.max_test_users": 2,
        "describe.llm_cache": root / "cache",
        "keywords.out": root / "keywords",
        "keywords.llm_cache": root / "cache",
        "keywords.max_new_tokens": 6,
        "keywords.target_max_new_tokens": 6,
        "train_soft.out": root / "soft",
        "train_soft.scenarios": "[]",  # no adapter: describe takes test users only, generate keywords only
        "generate.out": root / "generate",
        "generate.steps": 2,
        "select.out": root / "select",
    }


class Chain:
    """The tiny chain in `root`: commands, outputs, validation, hashes."""

    def __init__(self, root: Path, assets: Path) -> None:
        from pmg.config import load_params
        from pmg.stages.catalogue import Catalogue

        self.root = root
        sets = overrides(root, assets)
        self.args = ["--params", str(ROOT / "params.yaml")]
        for key, value in sets.items():
            self.args += ["--set", f"{key}={value}"]
        self.args += ["--metrics-root", str(root / "metrics"), "--plots-root", str(root / "plots")]
        # The overrides as the CLI parses them (YAML values), for the catalogue.
        import yaml

        params = load_params(ROOT / "params.yaml", {k: yaml.safe_load(str(v)) for k, v in sets.items()})
        self.catalogue = Catalogue(params, metrics_root=root / "metrics", plots_root=root / "plots")
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "1"}

    def build_models(self) -> None:
        from pmg.models.tiny import save_tiny_llm, save_tiny_open_clip, save_tiny_sd

        save_tiny_llm(self.root / "models" / "llm")
        save_tiny_sd(self.root / "models" / "sd")
        save_tiny_open_clip(self.root / "models" / "clip")

    def command(self, stage: str) -> list[str]:
        return [sys.executable, "-m", "pmg.cli", *self.args, stage, "--scenario", SCENARIO]

    def start(self, stage: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(stage),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def outputs(self, stage: str) -> list[Path]:
        """The stage's outputs, metrics and timings included."""
        return self.catalogue.outputs(stage, SCENARIO)

    def data_outputs(self, stage: str) -> list[Path]:
        """The outputs whose bytes a rerun must reproduce (no metrics: they hold wall times)."""
        metrics = self.root / "metrics"
        return [p for p in self.outputs(stage) if metrics not in p.parents]

    def digest(self, stage: str) -> dict[str, str]:
        """sha256 of every file of the stage's data outputs, by path."""
        hashes = {}
        for output in self.data_outputs(stage):
            files = sorted(p for p in output.rglob("*") if p.is_file()) if output.is_dir() else [output]
            for path in files:
                if path.exists():
                    hashes[str(path.relative_to(self.root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return hashes

    def validate(self, stage: str) -> list[str]:
        """What is wrong with the stage's committed outputs (missing ones are not wrong: never committed)."""
        from pmg import schemas
        from pmg.data.store import read_scenario
        from pmg.io import read_table
        from pmg.stages.catalogue import CANDIDATES_TABLE, GENERATE_REPORT

        c, s = self.catalogue, SCENARIO
        checks: list[tuple[Path, Callable[[], object]]] = []
        if stage == "prepare":
            checks.append((c.prepared(s), lambda: read_scenario(c.prepared(s))))
        elif stage == "describe":
            checks.append((c.descriptions(s), lambda: read_table(c.descriptions(s), schemas.Descriptions)))
        elif stage == "keywords":
            checks.append((c.keywords(s), lambda: read_table(c.keywords(s), schemas.Keywords)))
        elif stage == "generate":
            folder = c.candidates(s)
            table = folder / CANDIDATES_TABLE
            checks.append((folder, lambda: _check_candidates(folder, read_table(table, schemas.Candidates))))
            report = folder / GENERATE_REPORT
            checks.append((report, lambda: json.loads(report.read_text())))
        elif stage == "select":
            checks.append((c.scores(s), lambda: read_table(c.scores(s), schemas.Scores)))
        for path in self.outputs(stage):
            if path.suffix == ".json":
                checks.append((path, lambda path=path: json.loads(path.read_text())))
        problems = []
        for path, check in checks:
            if not path.exists():
                continue
            try:
                check()
            except Exception as err:  # noqa: BLE001 - every failure is a finding
                problems.append(f"{stage}: {path.relative_to(self.root)}: {type(err).__name__}: {err}"[:300])
        return problems

    def leftovers(self) -> list[str]:
        """Hidden staging/old/lock/temp entries anywhere under the scratch root (assets and models aside)."""
        found = []
        skip = {self.root / "models"}
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder)
            dirs[:] = [d for d in dirs if here / d not in skip]
            for name in [*dirs, *files]:
                if LEFTOVER.fullmatch(name):
                    found.append(str((here / name).relative_to(self.root)))
        return sorted(found)


def _check_candidates(folder: Path, candidates) -> None:
    from PIL import Image

    for relative in candidates["image_path"]:
        with Image.open(folder / relative) as image:
            image.load()


# ------------------------------------------------------------------ the suite


def _run_once(chain: Chain, stage: str, figures: Figures, what: str) -> float:
    started = time.perf_counter()
    process = chain.start(stage)
    _, err = process.communicate(timeout=600)
    if process.returncode != 0:
        figures.failed_runs.append(f"{stage} {what}: exit {process.returncode}: {err.strip()[-300:]}")
    return time.perf_counter() - started


def _compare(chain: Chain, stage: str, clean: dict[str, str], figures: Figures, what: str) -> None:
    now = chain.digest(stage)
    differ = sorted(p for p in set(clean) | set(now) if clean.get(p) != now.get(p))
    figures.mismatches += [f"{stage} {what}: {p}" for p in differ]
    figures.corrupt += [f"{what}: {p}" for p in chain.validate(stage)]
    figures.leftovers += [f"{stage} {what}: {p}" for p in chain.leftovers()]


def fault_stage(
    chain: Chain,
    stage: str,
    kills: int,
    trials: int,
    rng: random.Random,
    figures: Figures,
    *,
    kill_window: tuple[float, float] = (0.3, 1.0),
) -> None:
    """Clean run, kills, rerun and concurrent trials of one stage (see the module docstring)."""
    started = time.perf_counter()
    clean_seconds = _run_once(chain, stage, figures, "clean run")
    clean = chain.digest(stage)
    if not clean:
        figures.failed_runs.append(f"{stage} clean run: wrote no data output")
    landed = 0
    for _ in range(3 * kills):
        if landed == kills:
            break
        delay = rng.uniform(*kill_window) * clean_seconds
        process = chain.start(stage)
        try:
            process.wait(timeout=delay)
            figures.kills_missed += 1  # it finished first: not a kill
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the stage and any child it started
            process.wait()
            landed += 1
        process.stderr.close()
        figures.corrupt += [f"after a kill: {p}" for p in chain.validate(stage)]
    figures.kills += landed
    if not trials:
        _run_once(chain, stage, figures, "rerun after kills")
        _compare(chain, stage, clean, figures, "rerun after kills")
    for trial in range(trials):
        copies = 2 + trial % 2
        processes = []
        for _ in range(copies):
            processes.append(chain.start(stage))
            time.sleep(rng.uniform(0.0, 0.5))
        for copy, process in enumerate(processes):
            _, err = process.communicate(timeout=600)
            if process.returncode != 0:
                figures.failed_runs.append(
                    f"{stage} trial {trial} copy {copy}: exit {process.returncode}: {err.strip()[-300:]}"
                )
        figures.concurrent_trials += 1
        figures.concurrent_runs += copies
        _compare(chain, stage, clean, figures, f"trial {trial} ({copies} copies)")
    figures.per_stage[stage] = {
        "clean_seconds": round(clean_seconds, 2),
        "kills": landed,
        "trials": trials,
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_suite(
    root: Path,
    assets: Path,
    *,
    seed: int = 0,
    plan: dict[str, tuple[int, int]] | None = None,
    log: Callable[[str], object] = print,
) -> Figures:
    """Build the tiny models, then fault every stage of `plan` in chain order.

    Args:
        root: an empty scratch folder (everything is written under it).
        assets: a folder holding the `ml-100k`, `noto-emoji` and `fashion-mnist` assets.
        seed: seeds the kill points and the start offsets of the copies.
        plan: stage -> (kills, concurrent trials); default `DEFAULT_PLAN`.
            The stages before the first planned one are run once, cleanly.
    """
    plan = DEFAULT_PLAN if plan is None else plan
    unknown = set(plan) - set(STAGES)
    if unknown:
        raise SystemExit(f"faults: unknown stages {sorted(unknown)} (the chain is {', '.join(STAGES)})")
    started = time.perf_counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    chain = Chain(root, assets)
    chain.build_models()
    figures = Figures()
    last = max(STAGES.index(s) for s in plan)
    for stage in STAGES[: last + 1]:
        if stage in plan:
            fault_stage(chain, stage, *plan[stage], rng, figures)
            log(f"{stage}: {figures.per_stage[stage]}")
        else:
            _run_once(chain, stage, figures, "upstream run")
    figures.seconds = round(time.perf_counter() - started, 1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    figures.cpu_seconds = round(used, 1)  # the stages' CPU time: on a loaded machine wall time says little
    return figures


def _fetch_assets(folder: Path) -> Path:
    from pmg.assets import DEFAULT_ASSETS, fetch_assets
    from pmg.config import AssetsConfig

    specs = [spec for spec in DEFAULT_ASSETS if spec.name in {"ml-100k", "noto-emoji", "fashion-mnist"}]
    cfg = AssetsConfig(folder=str(folder), download_cache=str(ROOT / ".asset-cache"))
    fetch_assets(cfg, specs, log=lambda _: None)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--assets", type=Path, help="data assets folder (default: fetched into the scratch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", nargs="+", choices=STAGES, help="only these stages (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    plan = {s: DEFAULT_PLAN[s] for s in args.stages} if args.stages else None
    scratch = args.root or Path(tempfile.mkdtemp(prefix="pmg-faults-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        assets = args.assets or _fetch_assets(scratch / "assets")
        figures = run_suite(scratch / "chain", assets, seed=args.seed, plan=plan)
    finally:
        if args.root is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(figures.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    clean = not (figures.corrupt or figures.leftovers or figures.mismatches or figures.failed_runs)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
