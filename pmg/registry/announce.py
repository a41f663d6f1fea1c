"""Tell the Prefect server what the registry did: events and the `pmg-registry` artifact.

The registry itself knows nothing of Prefect; whoever moves an alias (the
`pmg registry` CLI, the register/promote/rollback flows) calls
`announce_move` or `announce_refusal` afterwards. They

- emit a Prefect event (`pmg.alias.moved`, `pmg.promotion.forced`,
  `pmg.promotion.refused`) about the resource `pmg.registry.<scenario>.<alias>`,
  which the automations of `flows.deploy` turn into notifications; and
- refresh the `pmg-registry` table artifact: one row per scenario and alias
  (`status_rows`), so the dashboard always shows what is in production.

Both need a Prefect API. When none is configured (`PREFECT_API_URL` unset)
or it does not answer its health check, they are skipped with one log line:
a registry move never fails because the dashboard is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pmg.config import RegistryConfig
from pmg.registry.registry import AliasMove, AliasStatus, Registry

#: The table artifact that shows every scenario's aliases.
ARTIFACT_KEY = "pmg-registry"
#: Metrics shown in the status rows (the gated ones come first).
HEADLINE_METRICS = ("lpips_history", "lpips_target", "ssim_history", "ssim_target")
_HEALTH_TIMEOUT_S = 2.0

Log = Callable[[str], object]


def prefect_api() -> str | None:
    """The Prefect API this process would talk to, if it answers; None otherwise.

    Inside a flow run the API is always there (the run reports to it, even a
    temporary local one); from a shell it is only when `PREFECT_API_URL` is
    set (e.g. by `prefect.env`) and the server answers.
    """
    import httpx
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if FlowRunContext.get() is not None:
        return url or "ephemeral"  # the run reports to an API already (maybe a temporary one)
    if not url:
        return None
    try:
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=_HEALTH_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    return url if answer.status_code == 200 else None


def _why_skipped() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return f"the Prefect API at {url} does not answer" if url else "PREFECT_API_URL is not set"


def status_rows(statuses: Iterable[AliasStatus], metrics: Sequence[str] = HEADLINE_METRICS) -> list[dict]:
    """Flat rows (scenario, alias, version, since, by, action, metrics) for tables and artifacts."""
    rows = []
    for status in statuses:
        row: dict[str, Any] = {
            "scenario": status.scenario,
            "alias": status.alias,
            "version": status.version,
            "since": status.at,
            "by": status.by,
            "action": (status.action or "") + (" (forced)" if status.forced else ""),
        }
        for name in metrics:
            row[name] = status.metrics.get(name)
        rows.append(row)
    return rows


def publish_status(cfg: RegistryConfig, scenarios: Iterable[str], *, log: Log = print) -> bool:
    """Refresh the `pmg-registry` artifact with every scenario's aliases; False if skipped.

    Args:
        cfg: the registry section.
        scenarios: the scenarios to show (those with adapters).
        log: where the skip line goes.
    """
    if prefect_api() is None:
        log(f"pmg-registry artifact not refreshed: {_why_skipped()}")
        return False
    import json

    from prefect import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.context import FlowRunContext, TaskRunContext

    statuses = [row for scenario in dict.fromkeys(scenarios) for row in Registry(cfg, scenario=scenario).status()]
    # Through the client, not `create_table_artifact`: that helper is deprecated outside runs
    # (the CLI), and this way a run's artifact is still linked to the run.
    flow_run, task_run = FlowRunContext.get(), TaskRunContext.get()
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                key=ARTIFACT_KEY,
                type="table",
                data=json.dumps(status_rows(statuses)),
                description="Where each scenario's staging and production aliases point (refreshed on every move).",
                flow_run_id=flow_run.flow_run.id if flow_run and flow_run.flow_run else None,
                task_run_id=task_run.task_run.id if task_run else None,
            )
        )
    return True


def _resource(scenario: str, alias: str, version: int | None) -> dict[str, str]:
    return {
        "prefect.resource.id": f"pmg.registry.{scenario}.{alias}",
        "prefect.resource.name": f"{scenario} {alias}",
        "pmg.scenario": scenario,
        "pmg.alias": alias,
        "pmg.version": "" if version is None else str(version),
    }


def _emit(event: str, resource: dict[str, str], payload: Mapping[str, Any]) -> None:
    """Send one event: through the run's events worker in a flow run, else at once, to PREFECT_API_URL.

    In a flow run, Prefect's `emit_event` relates the event to the run (and
    sends it in the background). Outside one (the CLI) the event is sent
    before returning, over a client made for the API configured now: a CLI
    process exits right after, and Prefect's shared events worker may have
    been made for another API earlier in the same process.
    """
    import asyncio

    from prefect.context import FlowRunContext
    from prefect.events import Event, emit_event
    from prefect.events.clients import get_events_client

    if FlowRunContext.get() is not None:
        emit_event(event=event, resource=resource, payload=dict(payload))
        return

    async def send() -> None:
        async with get_events_client() as client:
            await client.emit(Event(event=event, resource=resource, payload=dict(payload)))

    asyncio.run(send())


def announce_move(
    cfg: RegistryConfig, scenario: str, move: AliasMove, reason: str, scenarios: Iterable[str], *, log: Log = print
) -> bool:
    """Emit `pmg.alias.moved` (and `pmg.promotion.forced` for a forced move); refresh the artifact.

    Returns:
        False when no Prefect API was reachable (nothing was sent).
    """
    if not move.changed:
        return False
    if prefect_api() is None:
        log(f"alias move not announced to Prefect (event, pmg-registry artifact): {_why_skipped()}")
        return False
    payload = {
        "from_version": move.from_version,
        "to_version": move.to_version,
        "reason": reason,
        "forced": move.forced,
        "gates": move.report.describe() if move.report is not None else None,
    }
    resource = _resource(scenario, move.alias, move.to_version)
    _emit("pmg.alias.moved", resource, payload)
    if move.forced:
        _emit("pmg.promotion.forced", resource, payload)
    return publish_status(cfg, [*scenarios, scenario], log=log)


def announce_refusal(
    scenario: str, version: int, alias: str, message: str, *, log: Log = print
) -> bool:
    """Emit `pmg.promotion.refused` with the refusal message; False when no Prefect API was reachable."""
    if prefect_api() is None:
        log(f"refused promotion not announced to Prefect: {_why_skipped()}")
        return False
    _emit("pmg.promotion.refused", _resource(scenario, alias, version), {"version": version, "message": message})
    return True
