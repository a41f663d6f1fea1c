"""The fault-injection suite (`benchmarks/faults.py`, issue 16) within `make test`.

The slow test kills the stages of a tiny chain with SIGKILL at seeded random
points (20 kills) and runs 2-3 copies of a stage at once (10 trials), then
asserts what the issue sets as targets: no corrupt committed output, no
leftover after the next clean run, the clean run's bytes reproduced, every
run that was not killed succeeded. ~3-4 min of CPU on 2 cores.
The fast tests check that the suite's own checks see what they look for.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _faults():
    spec = importlib.util.spec_from_file_location("pmg_faults_suite", ROOT / "benchmarks" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_checks_see_corrupt_outputs_leftovers_and_changed_bytes(tmp_path: Path) -> None:
    faults = _faults()
    chain = faults.Chain(tmp_path, tmp_path / "assets")
    table = chain.catalogue.descriptions(faults.SCENARIO)
    table.parent.mkdir(parents=True)
    table.write_bytes(b"PAR1 half a table")
    assert chain.validate("describe") and "not a readable Parquet table" in chain.validate("describe")[0]
    clean = chain.digest("describe")
    table.write_bytes(b"PAR1 another half")
    assert chain.digest("describe") != clean
    (table.parent / f".{table.name}.k3j_x0a9.tmp").write_bytes(b"")
    (tmp_path / "prepared" / f".{faults.SCENARIO}.a1b2c3d4.staging").mkdir(parents=True)
    (tmp_path / "prepared" / f".{faults.SCENARIO}.lock").write_text("")
    assert chain.leftovers() == [
        f"describe/.{table.name}.k3j_x0a9.tmp",
        f"prepared/.{faults.SCENARIO}.a1b2c3d4.staging",
        f"prepared/.{faults.SCENARIO}.lock",
    ]


def test_the_default_plan_meets_the_issue(tmp_path: Path) -> None:
    faults = _faults()
    kills = sum(k for k, _ in faults.DEFAULT_PLAN.values())
    trials = sum(t for _, t in faults.DEFAULT_PLAN.values())
    assert kills >= 20 and trials >= 10
    assert list(faults.DEFAULT_PLAN) == list(faults.STAGES)  # every stage of the chain is faulted


@pytest.mark.slow
def test_no_fault_loses_or_mixes_an_output(tmp_path: Path, packaged_data_assets: Path) -> None:
    faults = _faults()
    figures = faults.run_suite(tmp_path / "chain", packaged_data_assets, seed=0)
    print(figures.summary())
    assert figures.kills >= 20 and figures.concurrent_trials >= 10
    assert figures.corrupt == []
    assert figures.leftovers == []
    assert figures.mismatches == []
    assert figures.failed_runs == []
