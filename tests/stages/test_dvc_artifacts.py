"""dvc.yaml declares the adapters and the zoo models as DVC artifacts, at the paths the stages write."""

from __future__ import annotations

from pathlib import Path

from pmg.config import load_params
from pmg.stages.catalogue import Catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_artifacts_are_the_stage_outputs_of_the_models() -> None:
    from dvc.repo import Repo

    params = load_params(ROOT / "params.yaml")
    catalogue = Catalogue(params)
    with Repo(str(ROOT)) as repo:
        declared = repo.artifacts.read()["dvc.yaml"]
        outs = {str(Path(out.fs_path).relative_to(ROOT)) for stage in repo.index.stages for out in stage.outs}
    expected = {
        **{f"soft-{s}": str(catalogue.adapter(s)) for s in params.train_soft.scenarios},
        **{f"zoo-{part}": str(catalogue.zoo(part)) for part in ("llm", "clip", "sd")},
    }
    assert {name: artifact.path for name, artifact in declared.items()} == expected
    assert all(artifact.type == "model" and artifact.desc for artifact in declared.values())
    # Each is what a stage writes, so `dvc artifacts get` finds it in the cache or the remote.
    assert set(expected.values()) <= outs
