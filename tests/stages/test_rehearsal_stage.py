"""Stage `rehearsal_models`: the table runs it through `pmg.models.rehearsal`, facts to the catalogue's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmg.config import load_params
from pmg.errors import ConfigError
from pmg.stages import rehearsal
from pmg.stages.catalogue import Catalogue
from pmg.stages.table import STAGES_BY_NAME, run_stage

ROOT = Path(__file__).resolve().parents[2]


def test_the_stage_builds_on_the_configured_device_and_records_the_facts(tmp_path: Path, monkeypatch) -> None:
    import pmg.models.rehearsal as R

    calls = []

    def fake_build(cfg, profile, *, device, say):
        calls.append((cfg.profile, profile.llm.path, device))
        return {"llm": {"path": profile.llm.path, "class": "LlamaForCausalLM", "parameters": 7, "seconds": 0.1, "config": {}}}

    monkeypatch.setattr(R, "build_rehearsal", fake_build)
    params = load_params(ROOT / "params.yaml", {"rehearsal.device": "cuda"})
    catalogue = Catalogue(params, metrics_root=tmp_path / "metrics")
    metrics = run_stage(STAGES_BY_NAME["rehearsal_models"], params, catalogue=catalogue, log=lambda _: None)
    assert calls == [("rehearsal", params.profiles["rehearsal"].llm.path, "cuda")]
    written = json.loads((tmp_path / "metrics" / "models" / "rehearsal.json").read_text())
    assert written == metrics == {
        "scale": "tiny",
        "seed": 0,
        "models": {"llm": {"path": params.profiles["rehearsal"].llm.path, "class": "LlamaForCausalLM", "parameters": 7, "seconds": 0.1}},
    }
    assert (tmp_path / "metrics" / "timings" / "rehearsal_models.json").is_file()
    assert catalogue.outputs("rehearsal_models")[:4] == [Path(p) for p in catalogue.rehearsal_models()]


def test_an_unknown_rehearsal_profile_is_one_clear_error() -> None:
    params = load_params(ROOT / "params.yaml", {"rehearsal.profile": "nope"})
    with pytest.raises(ConfigError, match=r"rehearsal.profile is 'nope' but profiles defines only"):
        rehearsal.run(params, log=lambda _: None)


def test_only_the_rehearsal_profile_runs_it_by_default() -> None:
    assert STAGES_BY_NAME["rehearsal_models"].profiles == ("rehearsal",)
    assert not STAGES_BY_NAME["rehearsal_models"].per_scenario
