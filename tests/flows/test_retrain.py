"""Retraining's register/promote step and the batch flow, against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
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
        scenario="clothing",
        params_path=PARAMS,
        overrides=overrides,
        reason="nightly",
    )
    assert (first["scenario"], first["version"], first["promoted"], first["gates"]["passed"]) == (
        "clothing",
        1,
        True,
        True,
    )

    # Worse personalisation than production by more than the tolerance: registered, not promoted.
    worse = {"lpips_history": 0.45, "lpips_target": 0.30}
    second = register_flow(
        adapter_dir=str(make_adapter(2)),
        metrics=worse,
        scenario="clothing",
        params_path=PARAMS,
        overrides=overrides,
        reason="nightly",
    )
    assert (second["version"], second["promoted"]) == (2, False)
    assert "FAIL lpips_history" in second["gate_report"]

    registry = Registry(registry_cfg, scenario="clothing")
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

    # The same worse metrics are movies' first version, promoted: gated against movies' production.
    movies = register_flow(
        adapter_dir=str(make_adapter(3)),
        metrics=worse,
        scenario="movies",
        params_path=PARAMS,
        overrides=overrides,
        reason="nightly",
    )
    assert (movies["scenario"], movies["version"], movies["promoted"]) == ("movies", 1, True)
    assert Registry(registry_cfg, scenario="movies").resolve("production") == 1
    assert registry.resolve("production") == 1 and [i.version for i in registry.versions()] == [1, 2]


def test_register_flow_refuses_an_adapter_of_another_scenario(
    registry_cfg: RegistryConfig, make_adapter: Any, in_tmp: Path, task_runs: Any
) -> None:
    folder = make_adapter(4)
    config = folder / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "scenario": "movies"}))
    state = register_flow(
        adapter_dir=str(folder),
        metrics={"lpips_history": 0.1, "lpips_target": 0.1},
        scenario="clothing",
        params_path=PARAMS,
        overrides=_registry_overrides(registry_cfg),
        return_state=True,
    )
    assert state.is_failed() and "is an adapter of scenario 'movies', not 'clothing'" in state.message
    (run,) = task_runs(state.state_details.flow_run_id)
    assert run.name == "register-version[clothing/production]" and run.run_count == 1  # not retried
    assert Registry(registry_cfg, scenario="clothing").versions() == []


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
        scenario="clothing",
        params_path=PARAMS,
        overrides=dead,
        return_state=True,
    )
    assert state.is_failed() and "cannot reach S3 endpoint http://127.0.0.1:9" in state.message
    (run,) = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 2  # transient: tried again once (RETRIES=1), then failed


@pytest.fixture
def fake_personalize(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """A stand-in `pmg.stages.personalize.personalize` recording its calls (no models needed)."""
    import pmg.stages.personalize

    calls: list[tuple] = []

    def personalize(params: Any, scenario: str, user: str, target: str, *, adapter_dir: str | None) -> dict:
        calls.append((scenario, user, target, adapter_dir and Path(adapter_dir)))
        return {"image": f"out/{scenario}/{user}-{target}.png"}

    monkeypatch.setattr(pmg.stages.personalize, "personalize", personalize)
    return calls


def test_batch_uses_each_scenarios_production_adapter(
    registry_cfg: RegistryConfig, make_adapter: Any, in_tmp: Path, fake_personalize: list, task_runs: Any
) -> None:
    metrics = {"lpips_history": 0.3, "lpips_target": 0.3}
    clothing = Registry(registry_cfg, scenario="clothing")
    for seed in (5, 6):
        clothing.push(make_adapter(seed), metrics, {}, git_revision="x")
    clothing.promote(2, to="production", reason="second")
    movies = Registry(registry_cfg, scenario="movies")
    movies.push(make_adapter(7), metrics, {}, git_revision="x")
    movies.promote(1, to="production", reason="first")

    pairs = [
        {"scenario": "emoji", "user": "u1", "target": "e9"},
        ["clothing", "u2", "i4"],
        ["movies", "u3", "m1"],
        ["clothing", "u4", "i5"],
    ]
    state = batch_flow(
        pairs=pairs,
        params_path=PARAMS,
        overrides={**_registry_overrides(registry_cfg), "train_soft.scenarios": ["clothing", "movies"]},
        adapter_cache=str(in_tmp / "adapters"),
        return_state=True,
    )
    assert state.is_completed(), state.message
    out = state.result()
    # Emoji has no adapters (train_soft.scenarios): keywords only, nothing pulled.
    assert [(r["scenario"], r["user"], r["adapter_version"]) for r in out] == [
        ("emoji", "u1", None),
        ("clothing", "u2", 2),
        ("movies", "u3", 1),
        ("clothing", "u4", 2),
    ]
    assert out[0]["result"] == {"image": "out/emoji/u1-e9.png"}
    cache = in_tmp / "adapters"
    used = {call[:3]: call[3] for call in fake_personalize}
    assert used == {
        ("emoji", "u1", "e9"): None,
        ("clothing", "u2", "i4"): cache / "clothing" / "v2",
        ("movies", "u3", "m1"): cache / "movies" / "v1",
        ("clothing", "u4", "i5"): cache / "clothing" / "v2",
    }
    # Each scenario got its own production's files, not the other's.
    for folder, seed in ((cache / "clothing" / "v2", 6), (cache / "movies" / "v1", 7)):
        assert (folder / "adapter.safetensors").read_bytes() == (
            make_adapter(seed) / "adapter.safetensors"
        ).read_bytes()
    assert sorted(p.relative_to(cache).as_posix() for p in cache.glob("*/*")) == ["clothing/v2", "movies/v1"]
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert {name for name in runs if name.startswith("pull-adapter")} == {
        "pull-adapter[clothing/production]",
        "pull-adapter[movies/production]",
    }
    assert GPU_TAG in runs["emoji/u1->e9"].tags
    assert GPU_TAG not in runs["pull-adapter[movies/production]"].tags


def test_batch_fails_before_any_pair_when_a_scenario_has_no_production(
    registry_cfg: RegistryConfig, make_adapter: Any, in_tmp: Path, fake_personalize: list
) -> None:
    clothing = Registry(registry_cfg, scenario="clothing")
    clothing.push(make_adapter(5), {"lpips_history": 0.3, "lpips_target": 0.3}, {}, git_revision="x")
    clothing.promote(1, to="production", reason="first")
    state = batch_flow(
        pairs=[["clothing", "u2", "i4"], ["movies", "u3", "m1"]],
        params_path=PARAMS,
        overrides=_registry_overrides(registry_cfg),
        adapter_cache=str(in_tmp / "adapters"),
        return_state=True,
    )
    assert state.is_failed() and "'production' points at no version yet" in state.message
    assert "/movies/" in state.message
    assert fake_personalize == []
