"""Scheduled retraining: refresh the data, retrain the adapter, evaluate, register, promote.

`retrain_flow` runs the pipeline's stages from `prepare` to `evaluate` for one
scenario (cached stages whose inputs did not change are skipped; the LLM
keyword cache inside the stages makes only new users cost LLM calls), then
`register_flow` pushes the trained adapter folder to the scenario's part of
the S3 registry as its next immutable version with the evaluation metrics and
the params, and moves the scenario's alias (`production`) only if the metric
gates of `registry.gates` pass against that scenario's production.

`register_flow` is a flow of its own so it can run (and be tested, and be
re-run after a registry outage) on an adapter folder and metrics alone.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.pipeline import choose_scenarios, run_stages
from flows.tasks import register_version, resolve_stages
from pmg.config import load_params, parse_params
from pmg.errors import ConfigError

#: What a retraining runs. The zoo (the mini profile's base models) is not
#: rebuilt: retraining is of the adapter, over refreshed data.
RETRAIN_STAGES = ("prepare", "describe", "keywords", "train_soft", "generate", "select", "evaluate")


@flow(name="pmg-register")
def register_flow(
    adapter_dir: str,
    metrics: dict[str, Any],
    scenario: str,
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    reason: str = "scheduled retraining",
    alias: str = "production",
) -> dict[str, Any]:
    """Register an adapter folder as the scenario's next version; promote it if the gates pass.

    Args:
        adapter_dir: the trained adapter (safetensors + JSON config).
        metrics: its evaluation metrics (nested mappings are flattened with
            dots; the gates name e.g. `lpips_history`).
        scenario: the scenario the adapter is for: its versions, its alias
            and its production are the ones used (an adapter whose config
            names another scenario is refused).
        params_path: `params.yaml` (its `registry` section says where).
        overrides: dotted overrides of `params_path`.
        params: an already-read parameter dump (from `retrain_flow`); wins
            over `params_path` + `overrides`.
        reason: recorded in the alias history.
        alias: the alias to move (`production` is gated by default).

    Returns:
        `{"scenario", "version", "promoted", "alias", "gates", "gate_report"}`.
    """
    parsed = (
        parse_params(params, "register_flow(params=...)")
        if params is not None
        else load_params(params_path, overrides)
    )
    outcome = register_version(
        parsed.registry, scenario, adapter_dir, metrics, parsed.model_dump(mode="json"), reason, alias
    )
    verdict = (
        f"promoted to **{alias}**" if outcome["promoted"] else f"**not** promoted to {alias} (a gate failed)"
    )
    create_markdown_artifact(
        key="pmg-registry",
        markdown=(
            f"# {scenario} adapter version {outcome['version']}\n\n{verdict}; reason: {reason}\n\n"
            f"```\n{outcome['gate_report']}\n```\n"
        ),
        description="The version this run registered and the metric gates that decided its promotion.",
    )
    if outcome["gates"].get("results"):
        create_table_artifact(
            key="pmg-gates",
            table=list(outcome["gates"]["results"]),
            description=f"Metric gates of {scenario} version {outcome['version']} against its production.",
        )
    if not outcome["promoted"]:
        get_run_logger().warning(
            "%s version %s registered but not promoted: %s",
            scenario,
            outcome["version"],
            outcome["gate_report"],
        )
    return outcome


@flow(name="pmg-retrain")
def retrain_flow(
    scenario: str = "clothing",
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    reason: str = "scheduled retraining",
    alias: str = "production",
    adapter_dir: str | None = None,
    gpu_deployment: str | None = None,
) -> dict[str, Any]:
    """prepare -> describe -> keywords -> train_soft -> generate -> select -> evaluate -> register/promote.

    Args:
        scenario: the scenario whose adapter is retrained and registered
            (as that scenario's next version, gated against its production).
        params_path, overrides: as `pipeline_flow`.
        reason: recorded with the promotion.
        alias: the scenario's alias to move when the gates pass.
        adapter_dir: the adapter folder to register; None takes the
            `adapter_dir` that `train_soft` reports in its metrics.
        gpu_deployment: as `pipeline_flow`: send GPU stages to the `gpu` queue.

    Returns:
        The registration outcome plus the stage metrics under `"stages"`.
    """
    params = load_params(params_path, overrides)
    stages = resolve_stages(RETRAIN_STAGES, params)
    (name,) = choose_scenarios(params, [scenario])
    results = run_stages(params, stages, [name], gpu_deployment=gpu_deployment)
    adapter = adapter_dir or (results["train_soft"][name] or {}).get("adapter_dir")
    if not adapter:
        raise ConfigError(
            "train_soft reported no `adapter_dir` in its metrics; pass retrain_flow(adapter_dir=...) "
            "to name the folder to register"
        )
    outcome = register_flow(
        adapter_dir=str(adapter),
        metrics=results["evaluate"][name],
        scenario=name,
        params=params.model_dump(mode="json"),
        reason=f"{reason} ({name})",
        alias=alias,
    )
    return {**outcome, "stages": results}
