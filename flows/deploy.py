"""Work pool, queues, the GPU concurrency limit and the deployments of the PMG flows.

Deployments live here, apart from the flows (STYLE.md convention 5)::

    python -m flows.deploy setup [--gpu-slots N]   # pool, queues, `gpu` limit, automations
    python -m flows.deploy deploy [--cron ...]     # the deployments on pool `pmg`
    python -m flows.deploy all                     # both

Everything is idempotent: re-running updates in place. The commands talk to
`PREFECT_API_URL` (`prefect.env` names the project's server, which `make
prefect-server` serves on 127.0.0.1:4200).

Deployments: the pipeline, one GPU stage, one nightly retraining *per
scenario with adapters* (`pmg-retrain/nightly-<scenario>`, each with its own
schedule), registration, promotion and rollback (so both can be run from the
dashboard) and the batch flow.

Automations (as code, created by `setup`): flow runs whose heartbeats stop
are marked Crashed; and, when `PMG_NOTIFY_WEBHOOK_URL` is set, a webhook
block `pmg-notify` posts `{"subject", "body"}` JSON to that URL when a flow
run fails or crashes and when a promotion is refused or forced
(`pmg.promotion.refused` / `pmg.promotion.forced` events, see
`pmg.registry.announce`). Without the variable the notifications are not
set up (and `setup` says so).

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
import os
import sys
from collections.abc import Sequence
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
FAILED_RUN_AUTOMATION = "pmg: notify on failed or crashed flow runs"
PROMOTION_AUTOMATION = "pmg: notify on refused or forced promotions"
#: The environment variable holding the notification webhook's URL (never in a file of the repo).
WEBHOOK_ENV = "PMG_NOTIFY_WEBHOOK_URL"
#: The webhook block the notification automations send through.
WEBHOOK_BLOCK = "pmg-notify"
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
        What exists now: `{"pool", "queues", "gpu_limit", "automation",
        "notifications"}` (`notifications`: the notification automations'
        names, empty when `PMG_NOTIFY_WEBHOOK_URL` is not set).
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
    notifications = ensure_notifications(os.environ.get(WEBHOOK_ENV))
    return {
        "pool": POOL,
        "queues": queues,
        "gpu_limit": limit.concurrency_limit,
        "automation": automation,
        "notifications": notifications,
    }


def _webhook_block(url: str) -> Any:
    """Save (or update) the `pmg-notify` webhook block that posts to `url`; return its document id.

    The body is JSON `{"subject", "body", "source": "pmg"}`. Private and
    loopback addresses are allowed: the URL comes from whoever runs the
    deployment, on a self-hosted server (a chat webhook relay on the
    intranet, or a local receiver in the tests).
    """
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="pmg",
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "pmg"},
        allow_private_urls=True,
        timeout=10,
    )
    return block.save(WEBHOOK_BLOCK, overwrite=True)


def _replace_automation(automation: Any) -> None:
    """Create `automation`, replacing any of the same name (so its settings follow the code)."""
    from prefect.automations import Automation

    while True:
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:
            break
    automation.create()


def _notify_on(
    name: str, description: str, events: set[str], resources: str, block_id: Any, subject: str, body: str
) -> Any:
    """An automation that posts `subject` / `body` (Jinja over the event) to the webhook on any of `events`."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=name,
        description=description,
        trigger=EventTrigger(
            expect=events,
            match=ResourceSpecification({"prefect.resource.id": resources}),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)],
    )


def ensure_notifications(url: str | None) -> list[str]:
    """The notification automations (failed/crashed runs; refused/forced promotions) through the webhook.

    Args:
        url: the webhook's URL (from `PMG_NOTIFY_WEBHOOK_URL`); None or empty
            sets up nothing and says so.

    Returns:
        The automations' names (empty when no URL was given).
    """
    if not url:
        print(f"{WEBHOOK_ENV} is not set: no notification automations (set it and run setup again)")
        return []
    block_id = _webhook_block(url)
    failed = _notify_on(
        FAILED_RUN_AUTOMATION,
        "Post to the pmg-notify webhook when any flow run fails or crashes.",
        {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        "prefect.flow-run.*",
        block_id,
        subject="pmg: flow run {{ flow_run.name }} ended {{ flow_run.state.name }}",
        body=(
            "Flow run {{ flow.name }}/{{ flow_run.name }} ended {{ flow_run.state.name }}: "
            "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
        ),
    )
    promotions = _notify_on(
        PROMOTION_AUTOMATION,
        "Post to the pmg-notify webhook when a promotion is refused by the gates or forced.",
        {"pmg.promotion.refused", "pmg.promotion.forced"},
        "pmg.registry.*",
        block_id,
        subject=(
            "pmg: {{ event.event }}: {{ event.resource['pmg.scenario'] }} version "
            "{{ event.resource['pmg.version'] }} -> {{ event.resource['pmg.alias'] }}"
        ),
        body="{{ event.payload | tojson }}",
    )
    for automation in (failed, promotions):
        _replace_automation(automation)
    return [FAILED_RUN_AUTOMATION, PROMOTION_AUTOMATION]


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


def deployments(scenarios: Sequence[str]) -> list[dict[str, Any]]:
    """The deployments: name, entrypoint, queue, parameters, and which are the scheduled retrainings.

    Args:
        scenarios: the scenarios that get a nightly retraining of their own.
    """
    nightly = [
        {
            "entrypoint": "flows/retrain.py:retrain_flow",
            "name": f"nightly-{scenario}",
            "queue": "default",
            "parameters": {"scenario": scenario, "gpu_deployment": GPU_DEPLOYMENT},
            "scheduled": True,
            "description": (
                f"Retrain the {scenario} adapter on refreshed data, evaluate, register; promote to staging "
                "and, if the paired gates pass, to production."
            ),
        }
        for scenario in scenarios
    ]
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
        *nightly,
        {
            "entrypoint": "flows/retrain.py:register_flow",
            "name": "register",
            "queue": "default",
            "parameters": {},
            "description": "Register an adapter folder + metrics + per-pair table; promote if its gates pass.",
        },
        {
            "entrypoint": "flows/retrain.py:promote_flow",
            "name": "promote",
            "queue": "default",
            "parameters": {},
            "description": "Move a scenario's staging/production alias to a version (gates and order apply).",
        },
        {
            "entrypoint": "flows/retrain.py:rollback_flow",
            "name": "rollback",
            "queue": "default",
            "parameters": {},
            "description": "Point a scenario's alias back at the version it had before.",
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


def apply(spec: dict[str, Any], source: str, schedules: list[Any] | None) -> str:
    """Create or update one deployment of `spec` on pool `pmg`; return `flow/deployment`."""
    from prefect import flow

    loaded = flow.from_source(source=source, entrypoint=spec["entrypoint"])
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
        ignore_warnings=True,
    )
    return f"{loaded.name}/{spec['name']}"


def retrain_schedule(cron: str = "0 2 * * *", timezone: str = "UTC", interval: float | None = None) -> Any:
    """The retraining schedule: `interval` seconds when given (trials), else the cron."""
    from prefect.schedules import Cron, Interval

    return Interval(timedelta(seconds=interval)) if interval else Cron(cron, timezone=timezone)


def deploy(
    source: str = str(ROOT),
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    scenarios: Sequence[str] | None = None,
    interval: float | None = None,
) -> list[str]:
    """Create or update every deployment on pool `pmg`; return their `flow/deployment` names.

    Args:
        source: where workers get the code: this checkout (a path; workers
            on other machines need it at the same path, with the data) or a
            git URL.
        cron: the retraining schedule (default nightly at 02:00).
        timezone: the schedule's time zone.
        scenarios: the scenarios with a nightly retraining; None takes
            `train_soft.scenarios` of `params.yaml` (those with adapters).
        interval: schedule the retrainings every `interval` seconds instead
            of the cron (to watch the scheduler work).
    """
    if scenarios is None:
        from pmg.config import load_params

        scenarios = list(load_params(ROOT / "params.yaml").train_soft.scenarios)
    names = []
    for spec in deployments(scenarios):
        schedules = [retrain_schedule(cron, timezone, interval)] if spec.get("scheduled") else None
        names.append(apply(spec, source, schedules))
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
    parser.add_argument("--interval", type=float, help="retrain every N seconds instead (to try schedules)")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument(
        "--scenario",
        action="append",
        help="scenario with a nightly retraining (repeatable; default: train_soft.scenarios)",
    )
    args = parser.parse_args(argv)
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    from flows.launch import AUTH_ENV

    try:
        if args.command in ("setup", "all"):
            done = setup(args.gpu_slots)
            notes = ", ".join(repr(n) for n in done["notifications"]) or f"none ({WEBHOOK_ENV} unset)"
            print(
                f"work pool {done['pool']!r} (process), queues {done['queues']}, "
                f"tag limit gpu={done['gpu_limit']}, automation {done['automation']!r}, notifications {notes}"
            )
        if args.command in ("deploy", "all"):
            for name in deploy(args.source, args.cron, args.timezone, args.scenario, args.interval):
                print(f"deployment {name} on pool {POOL!r}")
    except PrefectHTTPStatusError as err:
        if err.response.status_code != 401:
            raise
        print(
            f"pmg: error: the Prefect API {PREFECT_API_URL.value()} refused the request "
            f"(401 Unauthorized): set {AUTH_ENV} to the server's auth string before reading prefect.env",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
