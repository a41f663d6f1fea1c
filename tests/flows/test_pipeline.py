"""The pipeline flow under a Prefect test server: real stages, caching, retries, fail-fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.pipeline import gpu_stage_flow, pipeline_flow
from flows.tasks import GPU_TAG
from pmg.errors import DataError

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")
pytestmark = pytest.mark.usefixtures("prefect_api")


def _states(runs: list[Any]) -> dict[str, str]:
    return {run.name: run.state.name for run in runs}


@pytest.mark.slow
def test_prepare_runs_per_scenario_then_is_cached(
    packaged_data_assets: Path, tiny: Any, in_tmp: Path, task_runs: Any
) -> None:
    from prefect.artifacts import Artifact

    overrides = tiny(packaged_data_assets)
    state = pipeline_flow(params_path=PARAMS, overrides=overrides, stages=["prepare"], return_state=True)
    assert state.is_completed(), state.message
    results = state.result()
    assert {s: m["kept"]["users_split"] for s, m in results["prepare"].items()} == {
        "clothing": 12,
        "movies": 20,
        "emoji": 10,
    }
    # The same function as `dvc repro`: the tables and the stage's metrics files.
    for scenario in ("clothing", "movies", "emoji"):
        assert (in_tmp / "prepared" / scenario / "splits.parquet").is_file()
        assert json.loads((in_tmp / "metrics" / "prepare" / f"{scenario}.json").read_text())["kept"]
    first = task_runs(state.state_details.flow_run_id)
    assert _states(first) == {f"prepare[{s}]": "Completed" for s in ("clothing", "movies", "emoji")}
    # The metrics table artifact of the last per-scenario stage (evaluate in a full run).
    artifact = Artifact.get("pmg-prepare-metrics")
    assert artifact is not None and artifact.type == "table"
    assert {"scenario": "emoji", "metric": "kept.users_split", "value": 10} in json.loads(artifact.data)

    # Unchanged inputs: every task is answered from the cache (inputs + source).
    again = pipeline_flow(params_path=PARAMS, overrides=overrides, stages=["prepare"], return_state=True)
    assert again.is_completed() and again.result() == results
    assert set(_states(task_runs(again.state_details.flow_run_id)).values()) == {"Cached"}

    # A stage whose outputs were deleted runs again, whatever the cache holds.
    shutil.rmtree(in_tmp / "prepared" / "emoji")
    third = pipeline_flow(
        params_path=PARAMS, overrides=overrides, stages=["prepare"], scenarios=["emoji"], return_state=True
    )
    assert third.is_completed()
    assert _states(task_runs(third.state_details.flow_run_id)) == {"prepare[emoji]": "Completed"}
    assert (in_tmp / "prepared" / "emoji" / "splits.parquet").is_file()


def test_transient_failure_is_retried_and_the_flow_completes(
    replace_stage: Any, no_backoff: None, tiny: Any, task_runs: Any, tmp_path: Path
) -> None:
    calls: list[str] = []

    def flaky(params: Any, scenario: str, **_: Any) -> dict:
        calls.append(scenario)
        if len(calls) == 1:
            raise ConnectionError("S3 connection reset by peer")
        return {"kept": {"users_split": 3}}

    replace_stage("prepare", flaky)
    state = pipeline_flow(
        params_path=PARAMS,
        overrides=tiny(tmp_path),
        stages=["prepare"],
        scenarios=["emoji"],
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert calls == ["emoji", "emoji"]
    (run,) = task_runs(state.state_details.flow_run_id)
    assert run.state.name == "Completed" and run.run_count == 2


def test_deterministic_failure_fails_fast_with_the_cause(
    replace_stage: Any, no_backoff: None, tiny: Any, task_runs: Any, tmp_path: Path
) -> None:
    calls: list[str] = []

    def broken(params: Any, scenario: str, **_: Any) -> dict:
        calls.append(scenario)
        raise DataError(
            "data/prepared/emoji/splits.parquet", "user 'u7' has no target item", row=6, column="target_item"
        )

    replace_stage("prepare", broken)
    state = pipeline_flow(
        params_path=PARAMS,
        overrides=tiny(tmp_path),
        stages=["prepare"],
        scenarios=["emoji"],
        return_state=True,
    )
    assert state.is_failed()
    assert calls == ["emoji"]  # no retry
    cause = "data/prepared/emoji/splits.parquet, row 6, column 'target_item': user 'u7' has no target item"
    assert "DataError" in state.message and cause in state.message
    (run,) = task_runs(state.state_details.flow_run_id)
    assert run.state.name == "Failed" and run.run_count == 1
    assert cause in run.state.message  # what the dashboard shows on the task run
    with pytest.raises(DataError, match="row 6"):
        state.result()


def test_gpu_stages_run_tagged(replace_stage: Any, tiny: Any, task_runs: Any, tmp_path: Path) -> None:
    replace_stage("zoo_clip", lambda params, **_: {"gate_passed": True})
    state = pipeline_flow(
        params_path=PARAMS, overrides=tiny(tmp_path), stages=["zoo_clip"], return_state=True
    )
    assert state.is_completed(), state.message
    (run,) = task_runs(state.state_details.flow_run_id)
    assert run.name == "zoo_clip" and GPU_TAG in run.tags

    # What a GPU worker runs for one dispatched stage: the same task, same tag.
    from pmg.config import load_params

    params = load_params(PARAMS, tiny(tmp_path)).model_dump(mode="json")
    remote = gpu_stage_flow(stage="zoo_clip", params=params, return_state=True)
    assert remote.is_completed() and remote.result() == {"gate_passed": True}
    assert [GPU_TAG in r.tags for r in task_runs(remote.state_details.flow_run_id)] == [True]


class _FakeFlowRun:
    def __init__(self, state: Any) -> None:
        import uuid

        self.id, self.name, self.state = uuid.uuid4(), "gpu-run", state


def test_gpu_stages_are_dispatched_and_a_lost_worker_is_retried(
    monkeypatch: pytest.MonkeyPatch, no_backoff: None, tiny: Any, task_runs: Any, tmp_path: Path
) -> None:
    import prefect.deployments
    from prefect.states import Completed, Crashed, Failed

    sent: list[dict] = []
    answers = [Crashed(message="no heartbeat for 180 s"), Completed(data={"gate_passed": True})]

    def run_deployment(name: str, *, parameters: dict, **_: Any) -> _FakeFlowRun:
        sent.append({"name": name, **parameters})
        return _FakeFlowRun(answers.pop(0))

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    state = pipeline_flow(
        params_path=PARAMS,
        overrides=tiny(tmp_path),
        stages=["zoo_clip"],
        gpu_deployment="pmg-gpu-stage/gpu-stage",
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert state.result()["zoo_clip"] == {"gate_passed": True}
    assert [s["name"] for s in sent] == ["pmg-gpu-stage/gpu-stage"] * 2  # crashed once, sent again
    assert sent[0]["stage"] == "zoo_clip" and sent[0]["params"]["prepare"]["image_size"] == 32
    (run,) = task_runs(state.state_details.flow_run_id)
    assert (
        run.run_count == 2 and GPU_TAG not in run.tags
    )  # the GPU flow run holds the slot, not the dispatcher

    # A remote failure was already retried remotely if it was transient: not again here.
    sent.clear()
    answers[:] = [Failed(message="Flow run encountered an exception: DataError: x.parquet: bad")]
    failed = pipeline_flow(
        params_path=PARAMS,
        overrides=tiny(tmp_path),
        stages=["zoo_clip"],
        gpu_deployment="pmg-gpu-stage/gpu-stage",
        return_state=True,
    )
    assert failed.is_failed() and "DataError: x.parquet: bad" in failed.message and len(sent) == 1
