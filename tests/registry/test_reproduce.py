"""`pmg registry reproduce`: a version's revision and params re-run in a worktree, metrics compared.

A throw-away git repository stands for the project and a shell command for
`dvc repro`; the registry is a stand-in that returns one manifest (no S3).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pmg.errors import RegistryError
from pmg.registry import manifest as mf
from pmg.registry.reproduce import reproduce

METRICS = Path("metrics/evaluate/clothing.json")
ADAPTER = Path("data/soft/clothing")
ADAPTER_BYTES = b"adapter weights"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "params.yaml").write_text(yaml.safe_dump({"train_soft": {"steps": 5}, "base": {"profile": "mini"}}))
    (repo / METRICS).parent.mkdir(parents=True)
    (repo / METRICS).write_text(json.dumps({"lpips_history": 0.5}))  # stale: must not pass for a result
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v1")
    return repo


def _registry(repo: Path, metrics: dict[str, float]) -> SimpleNamespace:
    entry = mf.FileEntry(sha256=mf.sha256_bytes(ADAPTER_BYTES), size=len(ADAPTER_BYTES))
    manifest = SimpleNamespace(
        git_revision=_git(repo, "rev-parse", "HEAD"),
        params={"train_soft": {"steps": 20}},
        metrics=metrics,
        adapter_sha256=None,
        files={"adapter.safetensors": entry},
        git_dirty_paths=(),
        overrides={"train_soft.steps": 20},
    )
    return SimpleNamespace(scenario="clothing", manifest=lambda version: manifest)


def _command(lpips: float) -> str:
    """Writes the metrics and the adapter, after checking the recorded params were applied."""
    return (
        "grep -q 'steps: 20' params.yaml && "
        f"mkdir -p {ADAPTER} && printf '{ADAPTER_BYTES.decode()}' > {ADAPTER}/adapter.safetensors && "
        f"""echo '{{"lpips_history": {lpips}}}' > {METRICS}"""
    )


def _run(repo: Path, recorded: float, command: str, tmp_path: Path, name: str):
    return reproduce(
        _registry(repo, {"lpips_history": recorded}),  # type: ignore[arg-type]
        1,
        tmp_path / name,
        metrics_path=METRICS,
        adapter_path=ADAPTER,
        command=command,
        tolerance=1e-3,
        repo=repo,
        log=lambda line: None,
    )


def test_a_matching_rerun_is_reproduced_with_the_recorded_params(repo: Path, tmp_path: Path) -> None:
    result = _run(repo, 0.4, _command(0.4002), tmp_path, "same")
    assert result.matched and result.adapter_identical is True
    assert yaml.safe_load((tmp_path / "same" / "params.yaml").read_text())["train_soft"] == {"steps": 20}
    assert "reproduced (tolerance 0.001)" in result.describe()


def test_a_differing_metric_is_not_reproduced(repo: Path, tmp_path: Path) -> None:
    result = _run(repo, 0.4, _command(0.45), tmp_path, "differs")
    assert not result.matched
    assert "DIFFERS" in result.describe() and "NOT reproduced" in result.describe()


def test_a_command_that_writes_no_metrics_is_an_error_not_the_stale_file(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="wrote no metrics/evaluate/clothing.json"):
        _run(repo, 0.5, "true", tmp_path, "stale")
