"""`make gpu-check`: the whole pipeline on one GPU with the full profile, timed and measured per stage.

Runs every stage of the pipeline (describe, keywords, train_soft, generate,
select, evaluate, the ablation adapters and variants, report) through the
`pmg` command itself, in this process, on a few users per scenario
(`--users`, default 8: `describe.max_users`), and prints per stage the wall
time and the peak GPU memory (`torch.cuda.max_memory_allocated`, reset before
each stage, and `max_memory_reserved`), then the report's headline table.

Which models:

* `--profile auto` (default): the `full` profile when every one of its
  folders holds a finished fetch (`pmg models fetch --profile full`), else the
  `rehearsal` profile built at the real sizes (`rehearsal.scale=real`: the
  full profile's architectures and sizes with random weights — the memory and
  time of the real run, not its quality; the LLM's vocabulary is the
  rehearsal tokenizer's, see `pmg.models.rehearsal`). The real-size
  rehearsal models are made on the GPU and written under `--out`.
* `--profile full` / `--profile rehearsal`: that one, no fallback.

Nothing of the project's own outputs is touched: the run happens in a scratch
working directory (`--out`, default `data/gpu-check/`) whose `params.yaml` is
the project's with the overrides, whose inputs (`data/assets`,
`data/prepared`, `models`) are links to the project's, and where every
output (`data/...`, `metrics/...`, `plots/...`) is written. The figures go to
`<out>/gpu_check.json`; `--print <json>` prints a recorded run again.

A GPU is required: without CUDA the check fails with one line (it measures
GPU memory; the CPU path is the test suite's). This module has not run on a
GPU in this project's development environment (there is none); it is written
to be correct by construction and its argument handling and printing are
tested on CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pmg.errors import PMGError



def stages(profile: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(stage, `pmg` command line) in pipeline order: the stage table's stages that `profile` runs."""
    from pmg.stages.table import STAGES

    return tuple((s.name, s.command) for s in STAGES if s.profiles is None or profile in s.profiles)


#: What the scratch directory links to in the project (inputs only).
LINKED_INPUTS = ("data/assets", "data/prepared", "models")
FIGURES_FILE = "gpu_check.json"
GIB = 1024**3


class GpuCheckError(PMGError):
    """The GPU check cannot run (no GPU, missing inputs, a stage failed); the message says which."""


def choose_profile(requested: str, params) -> str:
    """`full` when requested, or when `auto` and every full folder is a finished fetch; else `rehearsal`."""
    from pmg.models.fetch import up_to_date

    if requested != "auto":
        if requested not in params.profiles:
            raise GpuCheckError(f"--profile {requested!r}: params.yaml defines only {sorted(params.profiles)}")
        return requested
    full = params.profiles.get("full")
    roles = ("llm", "captioner", "generator", "scorer")
    if full is not None and all(getattr(full, r).hub and up_to_date(getattr(full, r)) for r in roles):
        return "full"
    return "rehearsal"


def overrides(profile: str, users: int, extra: Sequence[str]) -> list[str]:
    """The `--set` pairs of the check: the profile, the users per scenario, the real-size rehearsal, the caller's."""
    pairs = [f"base.profile={profile}", f"describe.max_users={users}"]
    if profile == "rehearsal":
        pairs += ["rehearsal.scale=real", "rehearsal.device=cuda"]
    return pairs + list(extra)


def prepare_workdir(repo: Path, out: Path, params_file: Path) -> Path:
    """Make the scratch working directory: a copy of params.yaml and links to the project's inputs."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(params_file, out / "params.yaml")
    for relative in LINKED_INPUTS:
        source, link = repo / relative, out / relative
        if link.is_symlink() or link.exists():
            continue
        if source.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source.resolve(), target_is_directory=True)
    return out


def run_stage(argv: Sequence[str], cuda: Any) -> dict[str, float]:
    """Run one `pmg` command in this process; its wall time and peak GPU memory.

    Raises:
        GpuCheckError: the command failed (its own `pmg: error:` line was printed).
    """
    from pmg.cli import main

    gc.collect()
    if cuda is not None:
        cuda.empty_cache()
        cuda.reset_peak_memory_stats()
        cuda.synchronize()
    started = time.perf_counter()
    status = main(list(argv))
    if cuda is not None:
        cuda.synchronize()
    seconds = time.perf_counter() - started
    if status != 0:
        raise GpuCheckError(f"`pmg {' '.join(argv)}` failed with status {status} (see its error above)")
    figures = {"seconds": round(seconds, 2)}
    if cuda is not None:
        figures["max_allocated_gib"] = round(cuda.max_memory_allocated() / GIB, 3)
        figures["max_reserved_gib"] = round(cuda.max_memory_reserved() / GIB, 3)
    return figures


def format_figures(figures: dict[str, Any]) -> str:
    """The printed summary of a run: setup, one row per stage, totals, the headline table."""
    lines = [
        f"gpu-check: profile {figures['profile']}, {figures['users']} users per scenario, "
        f"{figures.get('device', '?')}; overrides: {' '.join(figures.get('overrides', []))}",
        "",
        f"| {'stage':22} | {'seconds':>8} | {'peak GPU GiB':>12} | {'reserved GiB':>12} |",
        f"|{'-' * 24}|{'-' * 10}|{'-' * 14}|{'-' * 14}|",
    ]
    total = 0.0
    peak = 0.0
    for name, row in figures["stages"].items():
        total += row["seconds"]
        allocated, reserved = row.get("max_allocated_gib"), row.get("max_reserved_gib")
        peak = max(peak, allocated or 0.0)
        shown = [f"{v:12.2f}" if v is not None else f"{'-':>12}" for v in (allocated, reserved)]
        lines.append(f"| {name:22} | {row['seconds']:8.1f} | {shown[0]} | {shown[1]} |")
    lines.append(f"| {'total':22} | {total:8.1f} | {peak:12.2f} | {'':12} |")
    if "build_seconds" in figures:
        lines.append(f"(real-size rehearsal models built in {figures['build_seconds']:.0f} s, not in the total)")
    budget = figures.get("budget_seconds")
    if budget:
        verdict = "within" if total <= budget else "OVER"
        lines.append(f"stages total {total / 60:.1f} min: {verdict} the {budget / 60:.0f}-minute budget")
    lines += ["", figures.get("headline") or "(no headline table: the report stage did not run)"]
    return "\n".join(lines)


def run(args: argparse.Namespace, say: Callable[[str], object] = print) -> dict[str, Any]:
    """Run the check (see the module docstring); return the recorded figures."""
    import torch

    from pmg.config import load_params
    from pmg.stages.catalogue import HEADLINE, Catalogue

    if not torch.cuda.is_available():
        raise GpuCheckError(
            "gpu-check measures GPU memory and needs CUDA, and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}); the CPU path is `make test`"
        )
    repo = Path(args.repo).resolve()
    params_file = (repo / args.params).resolve()
    base = load_params(params_file, _pairs(args.set))
    profile = choose_profile(args.profile, base)
    pairs = overrides(profile, args.users, args.set)
    work = prepare_workdir(repo, Path(args.out).resolve(), params_file)
    figures: dict[str, Any] = {
        "profile": profile,
        "users": args.users,
        "device": torch.cuda.get_device_name(0),
        "overrides": pairs,
        "budget_seconds": args.budget_minutes * 60,
        "stages": {},
    }
    previous = Path.cwd()
    os.chdir(work)
    try:
        common = ["--params", "params.yaml", *[x for pair in pairs for x in ("--set", pair)]]
        if profile == "rehearsal":
            say("gpu-check: no fetched full checkpoints; building the rehearsal models at the real sizes on the GPU")
        # Inputs the project already has are linked, not rebuilt.
        skip = {stage for stage, folder in (("assets", "assets"), ("prepare", "prepared")) if (work / "data" / folder).exists()}
        for name, command in stages(profile):
            if name in skip:
                continue
            say(f"gpu-check: {name} ...")
            timed = run_stage([*common, *command], torch.cuda)
            if name == "rehearsal_models":  # the stand-in for a fetch: not part of the run's time
                figures["build_seconds"] = timed["seconds"]
            else:
                figures["stages"][name] = timed
        params = load_params("params.yaml", _pairs(pairs))
        headline = Catalogue(params).report() / HEADLINE
        figures["headline"] = headline.read_text(encoding="utf-8") if headline.is_file() else None
    finally:
        os.chdir(previous)
        (work / FIGURES_FILE).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures


def _pairs(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise GpuCheckError(f"--set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The arguments of `python -m pmg.gpu_check` (exposed for tests)."""
    parser = argparse.ArgumentParser(prog="python -m pmg.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="auto", help="auto (full if fetched, else real-size rehearsal), full, rehearsal")
    parser.add_argument("--users", type=int, default=8, help="users per scenario (describe.max_users; default 8)")
    parser.add_argument("--out", default="data/gpu-check", help="scratch working directory (default data/gpu-check)")
    parser.add_argument("--repo", default=".", help="the project checkout (default: here)")
    parser.add_argument("--params", default="params.yaml", help="parameters file, relative to --repo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override (repeatable)")
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="the time the stages should fit in")
    parser.add_argument("--print", dest="print_json", metavar="JSON", help="print a recorded run and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check, or print a recorded one; `gpu-check: error: ...` and status 2 on a user error."""
    args = build_parser().parse_args(argv)
    try:
        if args.users < 1:
            raise GpuCheckError(f"--users must be >= 1, got {args.users}")
        if args.print_json:
            path = Path(args.print_json)
            if not path.is_file():
                raise GpuCheckError(f"--print {path}: no such file")
            figures = json.loads(path.read_text(encoding="utf-8"))
        else:
            figures = run(args)
    except PMGError as err:
        print(f"gpu-check: error: {err}", file=sys.stderr)
        return 2
    print(format_figures(figures))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
