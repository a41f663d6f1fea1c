"""Retraining's register/promote step and the batch flow, against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from flows.batch import batch_flow
from flows.retrain import register_flow, retrain_flow
from flows.tasks import GPU_TAG
from pmg.config import RegistryConfig
from pmg.registry import Registry

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")
pytestmark = pytest.mark.usefixtures("prefect_api")


def _registry_overrides(cfg: RegistryConfig) -> dict[str, Any]:
    """`--set` overrides pointing params.yaml's registry at the test server and bucket."""
    return {
        "registry.endpoint_url": cfg.endpoint_url,
        "registry.bucket": cfg.bucket,
        "registry.max_attempts": cfg.max_attempts,
        "registry.connect_timeout": cfg.connect_timeout,
        "registry.read_timeout": cfg.read_timeout,
    }


def test_register_flow_registers_and_promotes_by_the_gates(
    registry_cfg: RegistryConfig, make_adapter: Any, in_tmp: Path
) -> None:
    from prefect.artifacts import Artifact

    overrides = _registry_overrides(registry_cfg)
    good = {"lpips_history": 0.40, "lpips_target": 0.30, "ssim_history": 0.2}
    first = register_flow(
        adapter_dir=str(make_adapter(1)),
        metrics=good,
        params_path=PARAMS,
        overrides=overrides,
        reason="nightly",
    )
    assert (first["version"], first["promoted"], first["gates"]["passed"]) == (1, True, True)

    # Worse personalisation than production by more than the tolerance: registered, not promoted.
    worse = {"lpips_history": 0.45, "lpips_target": 0.30}
    second = register_flow(
        adapter_dir=str(make_adapter(2)),
        metrics=worse,
        params_path=PARAMS,
        overrides=overrides,
        reason="nightly",
    )
    assert (second["version"], second["promoted"]) == (2, False)
    assert "FAIL lpips_history" in second["gate_report"]

    registry = Registry(registry_cfg)
    assert registry.resolve("production") == 1
    assert [info.version for info in registry.versions()] == [1, 2]
    manifest = registry.manifest(2)
    assert manifest.metrics["lpips_history"] == 0.45
    assert manifest.params["registry"]["bucket"] == registry_cfg.bucket  # the params that made it
    assert registry.alias_history("production")[-1]["reason"] == "nightly"
    artifact = Artifact.get("pmg-registry")
    assert artifact is not None and "not** promoted" in artifact.data
    gates = Artifact.get("pmg-gates")
    assert gates is not None and {row["metric"] for row in json.loads(gates.data)} == {
        "lpips_history",
        "lpips_target",
    }


def test_registry_outage_is_retried_then_fails_with_the_endpoint(
    registry_cfg: RegistryConfig,
    make_adapter: Any,
    in_tmp: Path,
    no_backoff: None,
    task_runs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.tasks

    monkeypatch.setattr(flows.tasks, "RETRIES", 1)
    dead = {
        **_registry_overrides(registry_cfg),
        "registry.endpoint_url": "http://127.0.0.1:9",
        "registry.max_attempts": 0,
        "registry.connect_timeout": 0.5,
    }
    # register_version is built at import; rebuild it with the patched retry options.
    monkeypatch.setattr(
        flows.retrain,
        "register_version",
        flows.tasks.register_version.with_options(**flows.tasks.retry_options()),
    )
    state = register_flow(
        adapter_dir=str(make_adapter(3)),
        metrics={"lpips_history": 0.1},
        params_path=PARAMS,
        overrides=dead,
        return_state=True,
    )
    assert state.is_failed() and "cannot reach S3 endpoint http://127.0.0.1:9" in state.message
    (run,) = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 2  # transient: tried again once (RETRIES=1), then failed


@pytest.fixture
def fake_personalize(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """A stand-in `pmg.method.personalize` recording its calls (until the real one exists)."""
    calls: list[tuple] = []

    def personalize(params: Any, scenario: str, user: str, target: str, *, adapter_dir: str) -> dict:
        calls.append(
            (
                scenario,
                user,
                target,
                Path(adapter_dir).name,
                sorted(p.name for p in Path(adapter_dir).iterdir()),
            )
        )
        return {"image": f"out/{scenario}/{user}-{target}.png"}

    module = types.ModuleType("pmg.method.personalize")
    module.__spec__ = importlib.machinery.ModuleSpec("pmg.method.personalize", None)
    module.personalize = personalize  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pmg.method.personalize", module)
    return calls


def test_batch_uses_the_production_adapter(
    registry_cfg: RegistryConfig, make_adapter: Any, in_tmp: Path, fake_personalize: list, task_runs: Any
) -> None:
    registry = Registry(registry_cfg)
    registry.push(make_adapter(5), {"lpips_history": 0.3, "lpips_target": 0.3}, {}, git_revision="x")
    registry.promote(1, to="production", reason="first")
    pairs = [{"scenario": "emoji", "user": "u1", "target": "e9"}, ["clothing", "u2", "i4"]]
    state = batch_flow(
        pairs=pairs,
        params_path=PARAMS,
        overrides=_registry_overrides(registry_cfg),
        adapter_cache=str(in_tmp / "adapters"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    out = state.result()
    assert [(r["scenario"], r["user"], r["adapter_version"]) for r in out] == [
        ("emoji", "u1", 1),
        ("clothing", "u2", 1),
    ]
    assert out[0]["result"] == {"image": "out/emoji/u1-e9.png"}
    assert sorted(c[:4] for c in fake_personalize) == [
        ("clothing", "u2", "i4", "v1"),
        ("emoji", "u1", "e9", "v1"),
    ]
    assert fake_personalize[0][4] == ["adapter.safetensors", "adapter_config.json", "projection"]
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert GPU_TAG in runs["emoji/u1->e9"].tags and GPU_TAG not in runs["pull-adapter[production]"].tags
