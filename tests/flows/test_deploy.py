"""Work pool, queues, the gpu tag limit and the deployments, read back through the API."""

from __future__ import annotations

import pytest

from flows import deploy

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_setup_is_idempotent_and_reads_back() -> None:
    from prefect import get_client
    from prefect.automations import Automation

    first = deploy.setup(gpu_slots=1)
    assert first == {
        "pool": "pmg",
        "queues": ["default", "gpu"],
        "gpu_limit": 1,
        "automation": deploy.ZOMBIE_AUTOMATION,
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
    deploy.setup(gpu_slots=1)


def test_deployments_route_gpu_work_to_the_gpu_queue() -> None:
    from prefect import get_client

    deploy.setup(gpu_slots=1)
    names = deploy.deploy(cron="0 2 * * *", scenario="emoji")
    assert names == [
        "pmg-pipeline/pipeline",
        "pmg-gpu-stage/gpu-stage",
        "pmg-retrain/nightly",
        "pmg-register/register",
        "pmg-batch/batch",
    ]
    assert deploy.deploy(cron="0 3 * * *", scenario="emoji") == names  # re-deploying updates in place
    with get_client(sync_client=True) as client:
        found = {name: client.read_deployment_by_name(name) for name in names}
        assert {d.work_queue_name for n, d in found.items() if "gpu" in n or "batch" in n} == {"gpu"}
        assert {d.work_queue_name for n, d in found.items() if "gpu" not in n and "batch" not in n} == {
            "default"
        }
        assert all(d.work_pool_name == "pmg" for d in found.values())
        assert found["pmg-pipeline/pipeline"].parameters == {"gpu_deployment": deploy.GPU_DEPLOYMENT}
        nightly = found["pmg-retrain/nightly"]
        assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"]
        assert nightly.parameters["scenario"] == "emoji"
        assert (
            found["pmg-gpu-stage/gpu-stage"].job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60"
        )
