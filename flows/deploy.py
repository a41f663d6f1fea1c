"""Work pool, queues, the GPU concurrency limit and the deployments of the PMG flows.

Deployments live here, apart from the flows (STYLE.md convention 5)::

    python -m flows.deploy setup [--gpu-slots N]   # pool `pmg`, queues, `gpu` limit, zombie automation
    python -m flows.deploy deploy [--cron ...]     # the deployments on pool `pmg`
    python -m flows.deploy all                     # both

Everything is idempotent: re-running updates in place. The commands talk to
`PREFECT_API_URL` (`make prefect-server` serves it on 127.0.0.1:4200).

Routing, in Prefect 3 terms: work queues route *flow runs* of deployments,
never task runs. So the GPU stages have a deployment of their own,
`pmg-gpu-stage/gpu-stage`, on the queue `gpu`; the pipeline deployment sends
each GPU stage there (`gpu_deployment` parameter) and waits for it. GPU
workers poll only `gpu` (`make worker WORK_QUEUE=gpu`), CPU workers only
`default`. The `gpu` tag limit counts `gpu`-tagged task runs across the whole
server: set `--gpu-slots` to the number of GPUs; one worker per GPU with
`--limit 1` keeps one GPU flow run per GPU.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POOL = "pmg"
QUEUES = {
    "default": "CPU work: the pipeline and retraining flows, data preparation, LLM text stages, the registry",
    "gpu": "GPU work: train_soft, generate, evaluate (LPIPS) and batch personalisation flow runs",
}
GPU_DEPLOYMENT = "pmg-gpu-stage/gpu-stage"
ZOMBIE_AUTOMATION = "pmg: crash flow runs whose worker stopped sending heartbeats"
#: Flow runs emit a heartbeat this often (seconds); the automation marks a run
#: Crashed after `HEARTBEAT_S * 3` of silence, and a crashed GPU flow run is
#: re-dispatched by the pipeline's retry of transient failures.
HEARTBEAT_S = 60


def setup(gpu_slots: int = 1) -> dict[str, Any]:
    """Create (or update) the `process` pool `pmg`, its queues, the `gpu` tag limit, the zombie automation.

    Args:
        gpu_slots: concurrent `gpu`-tagged task runs across the server (the
            number of GPUs the workers have).

    Returns:
        What exists now: `{"pool", "queues", "gpu_limit", "automation"}`.
    """
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from flows.tasks import GPU_TAG

    if gpu_slots < 1:
        raise SystemExit(f"--gpu-slots must be >= 1 (0 would deadlock every gpu task), got {gpu_slots}")
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(POOL)
        except ObjectNotFound:
            pool = client.create_work_pool(
                WorkPoolCreate(
                    name=POOL,
                    type="process",
                    description="PMG flows as local processes; queue `gpu` for GPU workers",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        if pool.type != "process":
            raise SystemExit(
                f"work pool {POOL!r} exists with type {pool.type!r}, not 'process': delete it first"
            )
        for priority, (name, description) in enumerate(QUEUES.items(), start=1):
            try:
                client.create_work_queue(
                    name=name, work_pool_name=POOL, description=description, priority=priority
                )
            except ObjectAlreadyExists:
                pass
        # Upsert: the server stores it as the global concurrency limit `tag:gpu`.
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=gpu_slots)
        limit = client.read_concurrency_limit_by_tag(GPU_TAG)
        queues = sorted(q.name for q in client.read_work_queues(work_pool_name=POOL))
    automation = _ensure_zombie_automation()
    return {"pool": POOL, "queues": queues, "gpu_limit": limit.concurrency_limit, "automation": automation}


def _ensure_zombie_automation() -> str:
    """Mark flow runs Crashed when their heartbeats stop (a lost worker or machine).

    Prefect's documented recipe (docs: "detect zombie flows"); flow runs
    started by workers emit `prefect.flow-run.heartbeat` every
    `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (set by the deployments).
    """
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return ZOMBIE_AUTOMATION
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=HEARTBEAT_S * 3),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {HEARTBEAT_S * 3} s: the worker or its machine was lost",
            )
        ],
    ).create()
    return ZOMBIE_AUTOMATION


def deployments(cron: str, timezone: str, scenario: str) -> list[dict[str, Any]]:
    """The deployments: name, entrypoint, queue, parameters, schedule."""
    return [
        {
            "entrypoint": "flows/pipeline.py:pipeline_flow",
            "name": "pipeline",
            "queue": "default",
            "parameters": {"gpu_deployment": GPU_DEPLOYMENT},
            "description": "The whole pipeline; GPU stages go to the gpu queue as pmg-gpu-stage runs.",
        },
        {
            "entrypoint": "flows/pipeline.py:gpu_stage_flow",
            "name": "gpu-stage",
            "queue": "gpu",
            "parameters": {},
            "description": "One GPU stage for one scenario, started by the pipeline and retraining flows.",
        },
        {
            "entrypoint": "flows/retrain.py:retrain_flow",
            "name": "nightly",
            "queue": "default",
            "parameters": {"scenario": scenario, "gpu_deployment": GPU_DEPLOYMENT},
            "cron": cron,
            "timezone": timezone,
            "description": "Refresh data, retrain the adapter, evaluate, register; promote if gates pass.",
        },
        {
            "entrypoint": "flows/retrain.py:register_flow",
            "name": "register",
            "queue": "default",
            "parameters": {},
            "description": "Register an adapter folder + metrics for a scenario; promote if its gates pass.",
        },
        {
            "entrypoint": "flows/batch.py:batch_flow",
            "name": "batch",
            "queue": "gpu",
            "parameters": {},
            "description": (
                "Personalise (scenario, user, target) pairs with each scenario's production adapter."
            ),
        },
    ]


def deploy(
    source: str = str(ROOT), cron: str = "0 2 * * *", timezone: str = "UTC", scenario: str = "clothing"
) -> list[str]:
    """Create or update every deployment on pool `pmg`; return their `flow/deployment` names.

    Args:
        source: where workers get the code: this checkout (a path; workers
            on other machines need it at the same path, with the data) or a
            git URL.
        cron: the retraining schedule (default nightly at 02:00).
        timezone: the schedule's time zone.
        scenario: the scenario the nightly retraining retrains.
    """
    from prefect import flow
    from prefect.schedules import Cron

    names = []
    for spec in deployments(cron, timezone, scenario):
        loaded = flow.from_source(source=source, entrypoint=spec["entrypoint"])
        schedules = [Cron(spec["cron"], timezone=spec["timezone"])] if "cron" in spec else None
        loaded.deploy(
            name=spec["name"],
            work_pool_name=POOL,
            work_queue_name=spec["queue"],
            parameters=spec["parameters"],
            schedules=schedules,
            description=spec["description"],
            tags=["pmg"],
            job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}},
            build=False,
            push=False,
            print_next_steps=False,
        )
        names.append(f"{loaded.name}/{spec['name']}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["setup", "deploy", "all"])
    parser.add_argument(
        "--gpu-slots", type=int, default=1, help="concurrent gpu-tagged tasks (= GPUs); default 1"
    )
    parser.add_argument(
        "--source", default=str(ROOT), help="code location for workers: this checkout or a git URL"
    )
    parser.add_argument("--cron", default="0 2 * * *", help="retraining schedule (default: nightly 02:00)")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--scenario", default="clothing", help="scenario the nightly retraining retrains")
    args = parser.parse_args(argv)
    if args.command in ("setup", "all"):
        done = setup(args.gpu_slots)
        print(
            f"work pool {done['pool']!r} (process), queues {done['queues']}, "
            f"tag limit gpu={done['gpu_limit']}, automation {done['automation']!r}"
        )
    if args.command in ("deploy", "all"):
        for name in deploy(args.source, args.cron, args.timezone, args.scenario):
            print(f"deployment {name} on pool {POOL!r}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
