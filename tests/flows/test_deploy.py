"""Work pool, queues, the gpu tag limit and the deployments, read back through the API."""

from __future__ import annotations

import pytest

from flows import deploy

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_setup_is_idempotent_and_reads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import get_client
    from prefect.automations import Automation

    monkeypatch.delenv(deploy.WEBHOOK_ENV, raising=False)
    first = deploy.setup(gpu_slots=1)
    assert first == {
        "pool": "pmg",
        "queues": ["default", "gpu"],
        "gpu_limit": 1,
        "automation": deploy.ZOMBIE_AUTOMATION,
        "notifications": [],  # no webhook URL in the environment: no notification automations
    }
    second = deploy.setup(gpu_slots=2)  # again, with more GPUs: updated in place
    assert second["gpu_limit"] == 2 and second["queues"] == ["default", "gpu"]
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("pmg")
        assert pool.type == "process"
        limit = client.read_concurrency_limit_by_tag("gpu")
        assert limit.tag == "gpu" and limit.concurrency_limit == 2
        # Stored as one global concurrency limit, not duplicated by the second setup.
        names = [c.name for c in client.read_global_concurrency_limits(limit=100)]
        assert names.count("tag:gpu") == 1
        assert len(client.read_automations_by_name(deploy.ZOMBIE_AUTOMATION)) == 1
    automation = Automation.read(name=deploy.ZOMBIE_AUTOMATION)
    assert automation.actions[0].type == "change-flow-run-state"

    # With a webhook URL: a webhook block and the two notification automations, once each.
    monkeypatch.setenv(deploy.WEBHOOK_ENV, "http://127.0.0.1:9/hook")
    assert deploy.setup(gpu_slots=1)["notifications"] == [deploy.FAILED_RUN_AUTOMATION, deploy.PROMOTION_AUTOMATION]
    monkeypatch.setenv(deploy.WEBHOOK_ENV, "http://127.0.0.1:10/hook")
    deploy.setup(gpu_slots=1)
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    assert CustomWebhookNotificationBlock.load(deploy.WEBHOOK_BLOCK).url == "http://127.0.0.1:10/hook"
    with get_client(sync_client=True) as client:
        for name in (deploy.FAILED_RUN_AUTOMATION, deploy.PROMOTION_AUTOMATION):
            assert len(client.read_automations_by_name(name)) == 1
    failed = Automation.read(name=deploy.FAILED_RUN_AUTOMATION)
    assert failed.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    promotions = Automation.read(name=deploy.PROMOTION_AUTOMATION)
    assert promotions.trigger.expect == {"pmg.promotion.refused", "pmg.promotion.forced"}


def test_deployments_route_gpu_work_to_the_gpu_queue() -> None:
    from prefect import get_client

    deploy.setup(gpu_slots=1)
    names = deploy.deploy(cron="0 2 * * *", scenarios=["clothing", "movies"])
    assert names == [
        "pmg-pipeline/pipeline",
        "pmg-gpu-stage/gpu-stage",
        "pmg-retrain/nightly-clothing",
        "pmg-retrain/nightly-movies",
        "pmg-register/register",
        "pmg-promote/promote",
        "pmg-rollback/rollback",
        "pmg-batch/batch",
    ]
    # Re-deploying updates in place, here with another schedule.
    assert deploy.deploy(cron="0 3 * * *", scenarios=["clothing", "movies"]) == names
    with get_client(sync_client=True) as client:
        found = {name: client.read_deployment_by_name(name) for name in names}
        assert {d.work_queue_name for n, d in found.items() if "gpu" in n or "batch" in n} == {"gpu"}
        assert {d.work_queue_name for n, d in found.items() if "gpu" not in n and "batch" not in n} == {
            "default"
        }
        assert all(d.work_pool_name == "pmg" for d in found.values())
        assert found["pmg-pipeline/pipeline"].parameters == {"gpu_deployment": deploy.GPU_DEPLOYMENT}
        # One nightly retraining per scenario, each with its own schedule and scenario.
        for scenario in ("clothing", "movies"):
            nightly = found[f"pmg-retrain/nightly-{scenario}"]
            assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"]
            assert nightly.parameters["scenario"] == scenario
        assert [d.schedules for n, d in found.items() if "nightly" not in n] == [[]] * 6
        assert (
            found["pmg-gpu-stage/gpu-stage"].job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60"
        )


def test_default_nightly_scenarios_are_those_with_adapters() -> None:
    from pmg.config import load_params

    names = deploy.deploy(interval=3600)
    expected = [f"pmg-retrain/nightly-{s}" for s in load_params(deploy.ROOT / "params.yaml").train_soft.scenarios]
    assert [n for n in names if "nightly" in n] == expected
