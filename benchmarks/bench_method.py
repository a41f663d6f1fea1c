"""Benchmark: the method stages' speed and memory targets on the mini zoo.

Prints three figures (PMG issue 4):

1. **No-op `dvc repro`** — wall time of `dvc repro` when the pipeline is up
   to date (target < 30 s). Skipped, with the reason, when `dvc status`
   says a stage is stale: the timing would then include real work.
2. **One new user** — the keywords stage re-run with one more described user
   than `describe.max_users`, on a scratch copy of the LLM answer cache:
   the LLM calls and cache misses it makes, against the prompts of the new
   user alone (target: misses == the new user's prompts).
3. **`train_soft` memory and speed** — a short training run of one
   scenario's adapter (`--steps`, the configured batch size) into a scratch
   folder: peak resident memory of that process (target < 8 GiB) and steps
   per second.

Each part runs in its own process so that its peak memory is its own. Nothing
under `data/` or `metrics/` is written: every output goes to a scratch folder
(deleted at the end unless `--keep`).

    python benchmarks/bench_method.py [--scenario clothing] [--steps 20] [--keep]

Needs a completed `dvc repro` (prepared data, mini zoo, descriptions,
keywords and the answer cache).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pmg.config import load_params


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def part_keywords(args: argparse.Namespace, scratch: Path) -> dict:
    """Describe + keywords for `describe.max_users + 1` users on a copy of the answer cache."""
    from pmg.stages import describe, keywords
    from pmg.stages.catalogue import Catalogue

    base = load_params(args.params)
    if base.describe.max_users is None:
        return {"skipped": "describe.max_users is null (every user is described already)"}
    cache = scratch / "cache"
    shutil.copytree(base.keywords.llm_cache, cache)
    n_users = base.describe.max_users + 1
    params = load_params(
        args.params,
        {
            "describe.max_users": n_users,
            "describe.out": str(scratch / "describe"),
            "describe.llm_cache": str(cache),
            "keywords.out": str(scratch / "keywords"),
            "keywords.llm_cache": str(cache),
        },
    )
    quiet = lambda _line: None  # noqa: E731 - the stage's one-line report is not needed here
    where = Catalogue(params, metrics_root=scratch / "metrics")
    described = describe.run(params, args.scenario, catalogue=where, log=quiet)
    started = time.perf_counter()
    found = keywords.run(params, args.scenario, catalogue=where, log=quiet)
    seconds = time.perf_counter() - started
    users = int(found["users"]) or 1
    return {
        "users": n_users,
        "described_users": described["users"],
        "prompts": found["prompts"],
        "prompts_per_user": found["prompts"] / users,
        "llm_cache": found["llm_cache"],
        "keywords_seconds": round(seconds, 1),
    }


def part_train_soft(args: argparse.Namespace, scratch: Path) -> dict:
    """A short adapter training run; peak RSS of this process and steps per second."""
    from pmg.stages.train_soft import train_adapter

    params = load_params(args.params)
    if args.scenario not in params.train_soft.scenarios:
        return {"skipped": f"{args.scenario!r} is not in train_soft.scenarios"}
    cfg = params.train_soft.model_copy(update={"steps": args.steps, "val_every": max(args.steps, 1)})
    result = train_adapter(params, args.scenario, out=scratch / "adapter", cfg=cfg, log=lambda _line: None)
    return {
        "steps": args.steps,
        "batch_size": cfg.batch_size,
        "steps_per_second": result.metrics["steps_per_second"],
        "peak_rss_mib": round(_peak_mib(), 1),
    }


def noop_repro() -> dict:
    status = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, check=False)
    if status.returncode != 0:
        return {"skipped": f"dvc status failed: {status.stderr.strip()[-300:]}"}
    stale = json.loads(status.stdout or "{}")
    if stale:
        return {"skipped": f"the pipeline is not up to date ({', '.join(sorted(stale)[:5])} ...); run dvc repro first"}
    started = time.perf_counter()
    subprocess.run(["dvc", "repro"], capture_output=True, text=True, check=True)
    return {"seconds": round(time.perf_counter() - started, 2)}


def _child(part: str, args: argparse.Namespace, scratch: Path) -> dict:
    command = [sys.executable, __file__, "--part", part, "--scenario", args.scenario, "--steps", str(args.steps)]
    command += ["--params", args.params, "--scratch", str(scratch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"failed": done.stderr.strip()[-800:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="clothing")
    parser.add_argument("--steps", type=int, default=20, help="train_soft steps to time")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--part", choices=["keywords", "train_soft"], help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:  # a child process: one part, one JSON line
        scratch = Path(args.scratch) / args.part
        scratch.mkdir(parents=True, exist_ok=True)
        run = part_keywords if args.part == "keywords" else part_train_soft
        print(json.dumps(run(args, scratch)))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="pmg-bench-method-"))
    try:
        repro = noop_repro()
        print("1. no-op dvc repro:", json.dumps(repro))
        if "seconds" in repro:
            print(f"   {repro['seconds']} s (target < 30 s: {'met' if repro['seconds'] < 30 else 'MISSED'})")
        new_user = _child("keywords", args, scratch)
        print(f"2. keywords with one new {args.scenario} user:", json.dumps(new_user))
        if "llm_cache" in new_user:
            misses, per_user = new_user["llm_cache"]["misses"], new_user["prompts_per_user"]
            verdict = "met" if misses <= per_user else "MISSED"
            print(f"   cache misses {misses} vs {per_user:.0f} prompts of one user ({verdict}); "
                  f"LLM calls {new_user['llm_cache']['calls']}")
        soft = _child("train_soft", args, scratch)
        print(f"3. train_soft {args.scenario}, {args.steps} steps:", json.dumps(soft))
        if "peak_rss_mib" in soft:
            verdict = "met" if soft["peak_rss_mib"] < 8 * 1024 else "MISSED"
            print(f"   peak {soft['peak_rss_mib'] / 1024:.2f} GiB (target < 8 GiB: {verdict}); "
                  f"{soft['steps_per_second']:.2f} steps/s at batch {soft['batch_size']}")
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
