"""Fixtures of the flow tests: one Prefect test server per session, tiny configs, S3.

`prefect_api` starts ONE `prefect_test_harness` (a temporary SQLite server,
~10 s) for the whole session, with `PREFECT_HOME` and the result storage in a
pytest scratch folder. Flow tests run in `tmp_path` (the stages write their
metrics to `metrics/<stage>/` relative to the working directory).

The SeaweedFS fixtures of `tests/registry/conftest.py` are reused as they are
(loaded from that file, so nothing is duplicated).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"


def _load_registry_fixtures() -> Any:
    path = ROOT / "tests" / "registry" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_pmg_registry_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_registry = _load_registry_fixtures()
s3_server = _registry.s3_server
s3_env = _registry.s3_env
bucket_name = _registry.bucket_name
registry_cfg = _registry.registry_cfg
make_adapter = _registry.make_adapter


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A temporary Prefect server for the session; yields its API URL."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(
        updates={
            PREFECT_HOME: home,
            PREFECT_LOCAL_STORAGE_PATH: home / "results",
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120,
        }
    ):
        with prefect_test_harness(server_startup_timeout=120):
            yield PREFECT_API_URL.value()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in `tmp_path`: stage metrics land in `tmp_path/metrics`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the production backoff (the tasks read it when built)."""
    import flows.tasks

    monkeypatch.setattr(flows.tasks, "RETRY_DELAYS", [0, 0, 0])


@pytest.fixture
def replace_stage(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`replace_stage(name, run)`: the flows see stage `name` of the stage table run `run` instead."""
    import dataclasses

    import flows.tasks

    def replace(name: str, run: Any) -> None:
        stages = tuple(dataclasses.replace(s, run=run) if s.name == name else s for s in flows.tasks.STAGES)
        monkeypatch.setattr(flows.tasks, "STAGES", stages)
        monkeypatch.setattr(flows.tasks, "STAGES_BY_NAME", {s.name: s for s in stages})

    return replace


@pytest.fixture
def tiny(in_tmp: Path) -> Any:
    """`tiny(assets, **extra)`: the shrunken config of the flow tests, as `pmg --set` overrides."""

    def overrides(assets: Path, **extra: Any) -> dict[str, Any]:
        return {
            "assets.folder": str(assets),
            "prepare.out": str(in_tmp / "prepared"),
            "prepare.image_size": 32,
            "prepare.clothing.n_items": 60,
            "prepare.clothing.n_users": 12,
            "prepare.emoji.n_users": 10,
            "prepare.movies.max_users": 20,
            **extra,
        }

    return overrides


@pytest.fixture
def task_runs(prefect_api: str) -> Any:
    """`task_runs(flow_run_id)`: the flow run's task runs, read back through the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def read(flow_run_id: Any) -> list[Any]:
        with get_client(sync_client=True) as client:
            return client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    return read
