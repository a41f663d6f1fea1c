"""The PMG pipeline as a Prefect flow: the DVC stages, fanned out per scenario.

`pipeline_flow` runs the stages of the stage table (`pmg.stages.table.STAGES`,
the same stages and order as `dvc repro`, ablations included) that are asked
for (all that apply to the profile by default) in waves: each per-scenario stage is
submitted once per scenario and runs concurrently across scenarios; a stage
over all scenarios (the zoo, `report`) waits for the wave before it. The
first failure fails the flow as soon as it is seen (tasks of the same wave
already running finish; nothing downstream is submitted); deterministic
failures are not retried at all.

GPU stages run in-process (tagged `gpu`, so the tag's concurrency limit holds
them to the GPU count) unless `gpu_deployment` names the deployment of
`gpu_stage_flow`: then each is a flow run on that deployment's `gpu` work
queue, picked up by a GPU worker (see `flows.deploy`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, as_completed

from flows.tasks import (
    STAGES_BY_NAME,
    Stage,
    dispatch_gpu_stage,
    resolve_stages,
    retry_options,
    stage_task,
)
from pmg.config import Params, load_params, parse_params
from pmg.errors import ConfigError


def choose_scenarios(params: Params, scenarios: list[str] | None) -> list[str]:
    """`scenarios` (default: `base.scenarios`), each checked against `base.scenarios`."""
    if scenarios is None:
        return list(params.base.scenarios)
    unknown = [s for s in scenarios if s not in params.base.scenarios]
    if unknown or not scenarios:
        raise ConfigError(
            f"scenarios {scenarios} must be a non-empty subset of "
            f"base.scenarios {list(params.base.scenarios)}"
        )
    return list(dict.fromkeys(scenarios))


def _upstream(results: Mapping[str, Any], scenario: str | None) -> dict[str, Any]:
    """What a stage reads from earlier stages, for its cache key: their metrics."""
    if scenario is None:
        return dict(results)
    return {
        name: (value[scenario] if STAGES_BY_NAME[name].per_scenario else value)
        for name, value in results.items()
    }


def _submit(
    stage: Stage, params: Params, scenario: str | None, upstream: dict, gpu_deployment: str | None
) -> PrefectFuture:
    if stage.gpu and gpu_deployment:
        label = f"{stage.name}[{scenario}]" if scenario else stage.name
        dispatch = dispatch_gpu_stage.with_options(
            task_run_name=f"{label} on {gpu_deployment}", **retry_options()
        )
        return dispatch.submit(gpu_deployment, stage.name, params.model_dump(mode="json"), scenario, upstream)
    return stage_task(stage, params, scenario).submit(stage.name, params, scenario, upstream)


def wait_all(futures: Mapping[Any, PrefectFuture]) -> dict[Any, Any]:
    """Every future's result; the first failure to finish is raised as it is seen."""
    for future in as_completed(list(futures.values())):
        future.result()  # raises the task's own exception, message and type intact
    return {key: future.result() for key, future in futures.items()}


def run_stages(
    params: Params, stages: list[Stage], scenarios: list[str], *, gpu_deployment: str | None = None
) -> dict[str, Any]:
    """Run `stages` in order; per-scenario ones concurrently over `scenarios`.

    Returns:
        `{stage: {scenario: metrics}}` for per-scenario stages and
        `{stage: metrics}` for the others.
    """
    results: dict[str, Any] = {}
    for stage in stages:
        keys: list[str | None] = list(scenarios) if stage.per_scenario else [None]
        futures = {key: _submit(stage, params, key, _upstream(results, key), gpu_deployment) for key in keys}
        done = wait_all(futures)
        results[stage.name] = done if stage.per_scenario else done[None]
    return results


def _flatten(metrics: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(metrics, Mapping):
        return {prefix or "value": metrics}
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def publish_metrics(stage: str, per_scenario: Mapping[str, Any]) -> None:
    """A table artifact (scenario, metric, value) of one stage's metrics."""
    rows = [
        {"scenario": scenario, "metric": name, "value": value}
        for scenario, metrics in per_scenario.items()
        for name, value in sorted(_flatten(metrics).items())
        if isinstance(value, (int, float, str, bool)) or value is None
    ]
    create_table_artifact(
        table=rows,
        key=f"pmg-{stage.replace('_', '-')}-metrics",
        description=f"Metrics of the `{stage}` stage per scenario (`metrics/{stage}/<scenario>.json`).",
    )


def _report_path(report: Any) -> Path | None:
    if isinstance(report, Mapping):
        for key in ("report_path", "report", "html", "path", "index"):
            value = report.get(key)
            if isinstance(value, str | Path):
                return Path(value).resolve()
    return None


def publish_report(report: Any) -> None:
    """A markdown artifact pointing at the report (and holding its summary)."""
    path = _report_path(report)
    where = f"[{path}]({path.as_uri()})\n\n`{path}`" if path else "(the report stage named no file)"
    summary = json.dumps(report, indent=2, sort_keys=True, default=str)
    create_markdown_artifact(
        key="pmg-report",
        markdown=f"# PMG report\n\n{where}\n\n```json\n{summary}\n```\n",
        description="The HTML gallery and metrics summary written by the `report` stage.",
    )


@flow(name="pmg-pipeline")
def pipeline_flow(
    params_path: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    stages: list[str] | None = None,
    scenarios: list[str] | None = None,
    gpu_deployment: str | None = None,
) -> dict[str, Any]:
    """assets -> prepare -> (zoo) -> describe -> keywords -> train_soft -> generate -> select -> evaluate
    -> train_soft_ablations -> ablations -> report: the stage table, as `dvc repro` runs it.

    Args:
        params_path: `params.yaml`, read once here.
        overrides: dotted overrides, as `pmg --set` (`{"base.profile": "full"}`).
        stages: the stages to run, in any order (run in pipeline order);
            None runs every stage that applies to the profile. An unknown
            name fails the flow before anything runs.
        scenarios: a subset of `base.scenarios` (default: all of them).
        gpu_deployment: `<flow>/<deployment>` of `gpu_stage_flow`; GPU stages
            then run as flow runs on its work queue. None runs them here.

    Returns:
        The stages' metrics, `{stage: {scenario: metrics}}` (`{stage:
        metrics}` for stages over all scenarios).
    """
    logger = get_run_logger()
    params = load_params(params_path, overrides)
    chosen = resolve_stages(stages, params)
    names = choose_scenarios(params, scenarios)
    logger.info(
        "stages %s over scenarios %s (profile %s)", [s.name for s in chosen], names, params.base.profile
    )
    results = run_stages(params, chosen, names, gpu_deployment=gpu_deployment)
    per_scenario = [s.name for s in chosen if s.per_scenario]
    if per_scenario:  # `evaluate` when it ran, else the last per-scenario stage
        name = "evaluate" if "evaluate" in per_scenario else per_scenario[-1]
        publish_metrics(name, results[name])
    if "report" in results:
        publish_report(results["report"])
    return results


# The result (the stage's metrics) is persisted: the dispatching flow reads it
# back from the result storage, which GPU and CPU workers must share.
@flow(name="pmg-gpu-stage", persist_result=True)
def gpu_stage_flow(
    stage: str, params: dict[str, Any], scenario: str | None = None, upstream: Any = None
) -> dict:
    """One GPU stage for one scenario: what `pipeline_flow` sends to the `gpu` queue.

    Args:
        stage: a GPU stage name (`train_soft`, `generate`, `evaluate`, ...).
        params: the parent run's parameters, dumped (the exact config the
            parent read, whatever `params.yaml` says on this machine).
        scenario: the scenario (None for stages over all scenarios).
        upstream: the parent's upstream metrics (the same cache key as in-process).
    """
    parsed = parse_params(params, source="gpu_stage_flow(params=...)")
    (spec,) = resolve_stages([stage], parsed)
    return stage_task(spec, parsed, scenario)(spec.name, parsed, scenario, upstream)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.pipeline [--stages prepare ...] [--set key=value ...]`: run here, no deployment."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=pipeline_flow.description)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as `pmg --set`")
    parser.add_argument("--stages", nargs="+", help="default: every stage of the profile")
    parser.add_argument("--scenarios", nargs="+", help="default: base.scenarios")
    args = parser.parse_args(argv)
    overrides = {}
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"--set expects key=value, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    state = pipeline_flow(
        params_path=args.params,
        overrides=overrides or None,
        stages=args.stages,
        scenarios=args.scenarios,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
