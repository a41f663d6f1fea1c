"""Benchmark: time and peak memory of each mini-zoo build stage.

Runs `pmg zoo llm`, `pmg zoo clip` and `pmg zoo sd` as child processes into a
scratch folder (the project's own `data/zoo` is not touched), measures each
child's wall time and peak resident memory (`os.wait4` rusage), and prints
them with the budget: the whole zoo in at most 25 minutes and 8 GiB peak on
2 CPU cores. Needs `data/assets` and `data/prepared` (run `dvc repro prepare`).

    python benchmarks/bench_zoo.py [--parts llm clip sd] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 25 * 60
BUDGET_MIB = 8 * 1024


def run_child(argv: list[str]) -> tuple[int, float, float]:
    """Run `argv`; return (exit status, wall seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["llm", "clip", "sd"], choices=["llm", "clip", "sd"])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pmg-bench-zoo-"))
    overrides = [
        "--set", f"zoo.llm_out={scratch / 'llm'}",
        "--set", f"zoo.clip.out={scratch / 'clip'}",
        "--set", f"zoo.sd.out={scratch / 'sd'}",
    ]
    pmg = [sys.executable, "-m", "pmg.cli", *overrides]
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    total_wall, peak = 0.0, 0.0
    rows = []
    for part in args.parts:
        status, wall, rss = run_child([*pmg, "--metrics-root", str(scratch / "metrics"), "zoo", part])
        total_wall += wall
        peak = max(peak, rss)
        rows.append((part, status, wall, rss))
        if status != 0:
            print(f"zoo {part} exited with {status}")
            break
    print(f"\n{'stage':<8}{'status':>8}{'wall s':>10}{'peak MiB':>11}")
    for part, status, wall, rss in rows:
        print(f"{part:<8}{status:>8}{wall:>10.1f}{rss:>11.0f}")
    print(f"{'total':<8}{'':>8}{total_wall:>10.1f}{peak:>11.0f}")
    print(f"time: {total_wall / 60:.1f} min of {BUDGET_SECONDS / 60:.0f} ({total_wall / BUDGET_SECONDS:.2f}x budget)")
    print(f"peak memory: {peak:.0f} MiB of {BUDGET_MIB} ({peak / BUDGET_MIB:.2f}x budget)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r[1] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
