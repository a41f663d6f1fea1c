"""Scheduled retraining: refresh the data, retrain the adapter, evaluate, register, promote.

`retrain_flow` first checks that this worker can write the scenario's part of
the S3 registry (credentials, endpoint, bucket), then runs the pipeline's
stages from `prepare` to `evaluate` for one scenario (cached stages whose
inputs did not change are skipped; the LLM keyword cache inside the stages
makes only new users cost LLM calls), then `register_flow` pushes the
trained adapter folder, its metrics and its per-pair evaluation table as the
scenario's next immutable version and moves it along the promotion order
(`staging`, then `production`) while the paired metric gates of
`registry.gates` pass against that scenario's production.

Final states an engineer can read on the dashboard:

- `Completed`: registered and promoted to the requested alias;
- `Refused` (a Failed state): registered, but a gate or the promotion order
  refused the promotion; the message holds the failed gates, and the event
  `pmg.promotion.refused` is emitted (the automations notify on it);
- `Unchanged` (a Completed state): the adapter is byte-identical to an
  existing version, so no version was made;
- `Failed`/`Crashed`: something broke (also notified).

`register_flow`, `promote_flow` and `rollback_flow` are flows of their own so
they can run from the dashboard (deployments `pmg-register/register`,
`pmg-promote/promote`, `pmg-rollback/rollback`) and be re-run after a
registry outage. Every alias move refreshes the `pmg-registry` artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed, State

from flows.pipeline import choose_scenarios, run_stages
from flows.tasks import check_registry, register_version, resolve_stages
from pmg.config import Params, load_params, parse_params
from pmg.errors import ConfigError
from pmg.stages.catalogue import PAIRS_TABLE, Catalogue

#: What a retraining runs. The zoo (the mini profile's base models) is not
#: rebuilt: retraining is of the adapter, over refreshed data.
RETRAIN_STAGES = ("prepare", "describe", "keywords", "train_soft", "generate", "select", "evaluate")
#: The name of the final state of a run whose promotion was refused.
REFUSED = "Refused"
#: The name of the final state of a run whose adapter was already a version.
UNCHANGED = "Unchanged"


def _scenarios_with_adapters(params: Params, scenario: str) -> list[str]:
    return [*params.train_soft.scenarios, scenario]


def pairs_path(params: Params, scenario: str) -> Path:
    """The evaluate stage's per-pair table of `scenario` (what the paired gates compare)."""
    return Catalogue(params).evaluation(scenario) / PAIRS_TABLE


@flow(name="pmg-register")
def register_flow(
    adapter_dir: str,
    metrics: dict[str, Any],
    scenario: str,
    pairs: str | None = None,
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    reason: str = "scheduled retraining",
    alias: str = "production",
) -> dict[str, Any] | State:
    """Register an adapter folder as the scenario's next version; promote it if the gates pass.

    Args:
        adapter_dir: the trained adapter (safetensors + JSON config).
        metrics: its evaluation metrics (nested mappings are flattened with
            dots; the gates' thresholds name e.g. `lpips_history`).
        scenario: the scenario the adapter is for: its versions, its alias
            and its production are the ones used (an adapter whose config
            names another scenario is refused).
        pairs: its per-pair evaluation table (`pairs.parquet` of the evaluate
            stage), stored with the version for the paired gates; without it
            the version cannot be promoted past a production version.
        params_path: `params.yaml` (its `registry` section says where).
        overrides: dotted overrides of `params_path` (recorded with the version).
        params: an already-read parameter dump (from `retrain_flow`); wins
            over `params_path` + `overrides`.
        reason: recorded in the alias history.
        alias: the alias to reach; the version moves through the promotion
            order up to it (`staging`, then `production`).

    Returns:
        `{"scenario", "version", "promoted", "alias", "gates", "gate_report",
        "refused", "moves", "identical_to"}`; a refused promotion ends the run
        in the Failed state `Refused` (its data is the same dict), an
        identical adapter in the Completed state `Unchanged`.
    """
    parsed = (
        parse_params(params, "register_flow(params=...)")
        if params is not None
        else load_params(params_path, overrides)
    )
    outcome = register_version(
        parsed.registry,
        scenario,
        adapter_dir,
        metrics,
        parsed.model_dump(mode="json"),
        reason,
        alias,
        pairs,
        overrides,
    )
    return _finish(parsed, outcome, reason)


def _finish(params: Params, outcome: dict[str, Any], reason: str) -> dict[str, Any] | State:
    """Artifacts, events and the final state of a registration."""
    from pmg.registry.announce import announce_refusal, publish_status

    scenario, version, alias = outcome["scenario"], outcome["version"], outcome["alias"]
    logger = get_run_logger()
    if outcome["identical_to"] is not None:
        message = f"{scenario}: the adapter is byte-identical to version {version}; no new version"
        create_markdown_artifact(key="pmg-registration", markdown=f"# {scenario}: unchanged\n\n{message}\n")
        return Completed(name=UNCHANGED, message=message, data=outcome)
    moves = ", ".join(f"{m['alias']} {m['from_version'] or 'none'} -> {m['to_version']}" for m in outcome["moves"])
    verdict = (
        f"promoted to **{alias}**"
        if outcome["promoted"]
        else f"**not** promoted to {alias}: refused"
    )
    create_markdown_artifact(
        key="pmg-registration",
        markdown=(
            f"# {scenario} adapter version {version}\n\n{verdict}; reason: {reason}\n\n"
            f"alias moves: {moves or 'none'}\n\n```\n{outcome['refused'] or outcome['gate_report']}\n```\n"
        ),
        description="The version this run registered and the metric gates that decided its promotion.",
    )
    if outcome["gates"].get("results"):
        create_table_artifact(
            key="pmg-gates",
            table=list(outcome["gates"]["results"]),
            description=f"Paired metric gates of {scenario} version {version} against its production.",
        )
    publish_status(params.registry, _scenarios_with_adapters(params, scenario), log=logger.info)
    if outcome["promoted"]:
        return outcome
    announce_refusal(scenario, version, alias, outcome["refused"] or "", log=logger.info)
    logger.warning("%s version %s registered but not promoted: %s", scenario, version, outcome["refused"])
    return Failed(name=REFUSED, message=outcome["refused"], data=outcome)


@flow(name="pmg-retrain")
def retrain_flow(
    scenario: str = "clothing",
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    reason: str = "scheduled retraining",
    alias: str = "production",
    adapter_dir: str | None = None,
    gpu_deployment: str | None = None,
) -> dict[str, Any] | State:
    """check registry -> prepare -> ... -> evaluate -> register/promote, for one scenario.

    Args:
        scenario: the scenario whose adapter is retrained and registered
            (as that scenario's next version, gated against its production).
        params_path, overrides: as `pipeline_flow`; the overrides are
            recorded with the version.
        reason: recorded with the promotion.
        alias: the scenario's alias to reach when the gates pass.
        adapter_dir: the adapter folder to register; None takes the
            `adapter_dir` that `train_soft` reports in its metrics.
        gpu_deployment: as `pipeline_flow`: send GPU stages to the `gpu` queue.

    Returns:
        The registration outcome plus the stage metrics under `"stages"`;
        a refused promotion ends in the Failed state `Refused` (see `register_flow`).
    """
    params = load_params(params_path, overrides)
    stages = resolve_stages(RETRAIN_STAGES, params)
    (name,) = choose_scenarios(params, [scenario])
    check_registry(params.registry, name)  # before any training: credentials, endpoint, bucket
    results = run_stages(params, stages, [name], gpu_deployment=gpu_deployment)
    adapter = adapter_dir or (results["train_soft"][name] or {}).get("adapter_dir")
    if not adapter:
        raise ConfigError(
            "train_soft reported no `adapter_dir` in its metrics; pass retrain_flow(adapter_dir=...) "
            "to name the folder to register"
        )
    state = register_flow(
        adapter_dir=str(adapter),
        metrics=results["evaluate"][name],
        scenario=name,
        pairs=str(pairs_path(params, name)),
        overrides=overrides,
        params=params.model_dump(mode="json"),
        reason=f"{reason} ({name})",
        alias=alias,
        return_state=True,
    )
    if state.name == REFUSED:
        outcome = state.result(raise_on_failure=False)
        return Failed(name=REFUSED, message=state.message, data={**outcome, "stages": results})
    outcome = state.result()  # raises the registration's own error if it failed
    if state.name == UNCHANGED:
        return Completed(name=UNCHANGED, message=state.message, data={**outcome, "stages": results})
    return {**outcome, "stages": results}


@flow(name="pmg-promote")
def promote_flow(
    scenario: str,
    version: int,
    to: str = "production",
    reason: str = "promoted from the dashboard",
    force: bool = False,
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any] | State:
    """Move `scenario`'s alias `to` to `version`, if the order and the gates allow (or `force`).

    Returns:
        `{"scenario", "alias", "from_version", "to_version", "changed",
        "forced", "gate_report"}`; a refusal ends in the Failed state
        `Refused` with the failed gates as its message.
    """
    from pmg.registry import PromotionRefused, Registry
    from pmg.registry.announce import announce_move, announce_refusal

    params = load_params(params_path, overrides)
    logger = get_run_logger()
    registry = Registry(params.registry, scenario=scenario)
    try:
        move = registry.promote(version, to=to, reason=reason, force=force)
    except PromotionRefused as refused:
        announce_refusal(scenario, version, to, str(refused), log=logger.info)
        return Failed(name=REFUSED, message=str(refused))
    report = move.report.describe() if move.report is not None else ""
    logger.info("%s %s: %s -> %s%s\n%s", scenario, to, move.from_version, move.to_version,
                " (forced)" if move.forced else "", report)
    announce_move(params.registry, scenario, move, reason, _scenarios_with_adapters(params, scenario),
                  log=logger.info)
    return {
        "scenario": scenario,
        "alias": move.alias,
        "from_version": move.from_version,
        "to_version": move.to_version,
        "changed": move.changed,
        "forced": move.forced,
        "gate_report": report,
    }


@flow(name="pmg-rollback")
def rollback_flow(
    scenario: str,
    alias: str = "production",
    reason: str = "rolled back from the dashboard",
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Point `scenario`'s `alias` back at the version it had before its current one."""
    from pmg.registry import Registry
    from pmg.registry.announce import announce_move

    params = load_params(params_path, overrides)
    move = Registry(params.registry, scenario=scenario).rollback(alias, reason=reason)
    get_run_logger().info("%s %s rolled back: %s -> %s", scenario, alias, move.from_version, move.to_version)
    announce_move(params.registry, scenario, move, reason, _scenarios_with_adapters(params, scenario),
                  log=get_run_logger().info)
    return {"scenario": scenario, "alias": alias, "from_version": move.from_version, "to_version": move.to_version}
