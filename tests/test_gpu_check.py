"""`make gpu-check` on a machine without a GPU: its decisions, its refusal, and its printing of recorded figures.

The check itself needs CUDA (it measures GPU memory) and has not run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pmg import gpu_check
from pmg.config import load_params
from pmg.models.fetch import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]

RECORDED = {
    "profile": "full",
    "users": 8,
    "device": "NVIDIA H100 80GB HBM3",
    "overrides": ["base.profile=full", "describe.max_users=8"],
    "budget_seconds": 600,
    "stages": {
        "describe": {"seconds": 41.25, "max_allocated_gib": 21.5, "max_reserved_gib": 23.0},
        "train_soft": {"seconds": 95.0, "max_allocated_gib": 31.25, "max_reserved_gib": 34.0},
        "report": {"seconds": 3.5, "max_allocated_gib": 0.0, "max_reserved_gib": 0.0},
    },
    "headline": "| scenario | LPIPS history |\n|---|---|\n| clothing | 0.61 |",
}


def test_printing_a_recorded_run(tmp_path: Path, capsys) -> None:
    recorded = tmp_path / "gpu_check.json"
    recorded.write_text(json.dumps(RECORDED))
    assert gpu_check.main(["--print", str(recorded)]) == 0
    out = capsys.readouterr().out
    assert "gpu-check: profile full, 8 users per scenario, NVIDIA H100 80GB HBM3" in out
    assert "| train_soft             |     95.0 |        31.25 |        34.00 |" in out
    assert "| total                  |    139.8 |        31.25 |" in out  # seconds summed, peak = max
    assert "stages total 2.3 min: within the 10-minute budget" in out
    assert out.rstrip().endswith("| clothing | 0.61 |")


def test_over_budget_and_missing_headline_are_said() -> None:
    figures = {**RECORDED, "budget_seconds": 60, "headline": None}
    text = gpu_check.format_figures(figures)
    assert "stages total 2.3 min: OVER the 1-minute budget" in text
    assert "(no headline table: the report stage did not run)" in text


def test_no_gpu_is_one_line_not_a_cpu_run(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status = gpu_check.main(["--repo", str(ROOT), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err
    assert err.startswith("gpu-check: error: gpu-check measures GPU memory and needs CUDA")
    assert not (tmp_path / "out").exists()  # nothing was prepared


def test_bad_arguments(capsys, tmp_path: Path) -> None:
    assert gpu_check.main(["--users", "0"]) == 2
    assert "--users must be >= 1" in capsys.readouterr().err
    assert gpu_check.main(["--print", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.main(["--users", "many"])


def test_profile_choice_falls_back_to_the_real_size_rehearsal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no models/ here: nothing fetched
    params = load_params(ROOT / "params.yaml")
    assert gpu_check.choose_profile("auto", params) == "rehearsal"
    assert gpu_check.choose_profile("full", params) == "full"
    with pytest.raises(gpu_check.GpuCheckError, match=r"--profile 'huge': params.yaml defines only"):
        gpu_check.choose_profile("huge", params)
    # Every full folder holding a finished fetch of its pinned commit: the full profile.
    full = params.profiles["full"]
    for role in ("llm", "captioner", "generator", "scorer"):
        spec = getattr(full, role)
        folder = tmp_path / spec.path
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        record = {"repo": spec.hub, "revision": spec.revision, "files": {"config.json": {"size": 2}}}
        (folder / LOCK_FILE).write_text(json.dumps(record))
    assert gpu_check.choose_profile("auto", params) == "full"
    # A fetch of another commit is not the pinned checkpoint.
    lock = tmp_path / full.llm.path / LOCK_FILE
    lock.write_text(json.dumps({**json.loads(lock.read_text()), "revision": "0" * 40}))
    assert gpu_check.choose_profile("auto", params) == "rehearsal"


def test_overrides_and_the_scratch_workdir(tmp_path: Path) -> None:
    pairs = gpu_check.overrides("rehearsal", 8, ["generate.steps=10"])
    assert pairs == [
        "base.profile=rehearsal",
        "describe.max_users=8",
        "rehearsal.scale=real",
        "rehearsal.device=cuda",
        "generate.steps=10",
    ]
    assert gpu_check.overrides("full", 3, []) == ["base.profile=full", "describe.max_users=3"]
    params = load_params(ROOT / "params.yaml", gpu_check._pairs(pairs))
    assert params.base.profile == "rehearsal" and params.rehearsal.scale == "real"
    assert params.rehearsal.sizes("llm") == {}  # real sizes
    repo = tmp_path / "repo"
    (repo / "data" / "assets").mkdir(parents=True)
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    work = gpu_check.prepare_workdir(repo, tmp_path / "work", repo / "params.yaml")
    assert (work / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert (work / "data" / "assets").is_symlink() and (work / "data" / "assets").resolve() == (repo / "data" / "assets").resolve()
    assert not (work / "data" / "prepared").exists() and not (work / "models").exists()  # absent inputs are not linked


def test_every_stage_of_the_check_is_a_pmg_command() -> None:
    from pmg.cli import build_parser

    parser = build_parser()
    for profile in ("full", "rehearsal"):
        for name, command in gpu_check.stages(profile):
            args = parser.parse_args(list(command))
            assert callable(args.func), name


def test_the_check_runs_the_stage_tables_stages_of_its_profile() -> None:
    """The rehearsal models are built first on the rehearsal profile; the mini zoo never runs."""
    from pmg.stages.table import STAGES

    full = [name for name, _ in gpu_check.stages("full")]
    rehearsal = [name for name, _ in gpu_check.stages("rehearsal")]
    assert rehearsal == [s.name for s in STAGES if not s.name.startswith("zoo_")]
    assert rehearsal.index("rehearsal_models") < rehearsal.index("describe")
    assert full == [name for name in rehearsal if name != "rehearsal_models"]
