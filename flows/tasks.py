"""Prefect tasks over `pmg` functions, and what decides how they retry and cache.

A task here is a few lines calling `pmg` code (STYLE.md convention 5):

- `run_stage` runs one stage of the stage table (`pmg.stages.table.STAGES`,
  the list `dvc.yaml` is checked against) for one scenario, through the same
  `pmg.stages.table.run_stage` as `dvc repro` (timings included). It caches
  on its inputs (the stage name, the frozen `Params`, the scenario, the
  upstream stages' metrics) + its source + the source of the `pmg` modules
  the stage runs (the files its `dvc.yaml` deps list, `pmg.stages.deps`), so
  both doors agree on what is stale; while the stage's outputs (as the
  catalogue names them) are missing on disk it runs (and refreshes its cache
  entry) whatever the cache holds. Results persist under
  `PREFECT_LOCAL_STORAGE_PATH` (the Makefile sets `.prefect/results`).
- `dispatch_gpu_stage` runs a GPU stage as a flow run of the `gpu_stage`
  deployment (on the `gpu` work queue) and waits for it: how GPU work reaches
  GPU workers in Prefect 3, which routes flow runs, not task runs, to queues.
- `register_version`, `pull_adapter` talk to one scenario's versions and
  aliases in the S3 registry (no cache: the registry is state, not a
  function of the inputs).
- `personalize_pair` runs the per-pair chain for the batch flow.

Retries: every task retries `RETRIES` times with the backoff `RETRY_DELAYS`,
but `retry_on_transient` lets only transient failures retry (connection errors,
timeouts, an S3 or LLM endpoint that could not be reached, a lost worker).
Deterministic failures (`DataError`, `ConfigError`, schema errors, a refused
promotion, any bug) fail at once with the cause as the state message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext

from pmg.config import Params, RegistryConfig
from pmg.errors import ConfigError, DataError, ModelError, PMGError, RegistryError
from pmg.stages.catalogue import Catalogue
from pmg.stages.table import STAGES, STAGES_BY_NAME, Stage
from pmg.stages.table import run_stage as run_pmg_stage

# ------------------------------------------------------------------ retries

#: Attempts after the first, for transient failures only.
RETRIES = 3
#: Backoff between attempts (seconds): an S3 hiccup, an LLM endpoint restart,
#: a GPU worker being replaced.
RETRY_DELAYS = [10, 60, 300]
#: The tag of tasks that need a GPU; `flows.deploy setup` limits its concurrency.
GPU_TAG = "gpu"


class WorkerLost(ConnectionError):
    """A dispatched flow run crashed: its worker or machine went away (transient)."""


class RemoteStageFailed(PMGError):
    """A dispatched flow run failed on its worker (deterministic: it already retried there)."""


# Exceptions whose class name says a distributed worker went away (dask,
# ray, celery-style runners), matched by name so none of them is imported.
_LOST_WORKER_NAMES = frozenset(
    {
        "KilledWorker",
        "CommClosedError",
        "WorkerLostError",
        "RayActorError",
        "NodeDiedError",
        "WorkerCrashedError",
    }
)
# S3 error codes that mean "try again later".
_TRANSIENT_S3_CODES = frozenset(
    {
        "500",
        "502",
        "503",
        "504",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
# `pmg.models.llm` raises this when an endpoint gave no answer after its own
# retries (connection errors, timeouts, 5xx, 429); a 4xx refusal or a garbled
# answer reads differently and is not transient.
_ENDPOINT_GAVE_UP = re.compile(r"failed \d+ attempt\(s\); last: ")
# `pmg.registry.s3.Bucket.translate` for connection failures and timeouts.
_S3_UNREACHABLE = "cannot reach S3 endpoint"


def _transient_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, WorkerLost]
    try:
        import httpx

        found.append(httpx.TransportError)  # connect/read/write errors and timeouts
    except ImportError:  # pragma: no cover - httpx comes with prefect
        pass
    try:
        import botocore.exceptions as bex

        found += [bex.ConnectionError, bex.HTTPClientError]  # includes endpoint and read timeouts
    except ImportError:  # pragma: no cover - boto3 is a dependency
        pass
    try:
        import requests

        found += [requests.ConnectionError, requests.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


_TRANSIENT_TYPES = _transient_types()


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """`exc` and the exceptions it was raised from, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def _is_transient_one(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if any(cls.__name__ in _LOST_WORKER_NAMES for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, Mapping):
        code = str(response.get("Error", {}).get("Code", ""))
        status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return code in _TRANSIENT_S3_CODES or status in _TRANSIENT_S3_CODES
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed where this attempt failed.

    An exception may decide for itself with a boolean `transient` attribute.
    Otherwise: `DataError` and `ConfigError` never are (the input or the
    config must change first); a `RegistryError` or `ModelError` is when it
    says an endpoint could not be reached, or was raised from a transient
    cause; anything else is when it or an exception it was raised from is a
    connection error, a timeout, a lost worker or a throttling S3 answer.
    """
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, DataError | ConfigError):
        return False
    if isinstance(exc, RegistryError) and str(exc).startswith(_S3_UNREACHABLE):
        return True
    if isinstance(exc, ModelError) and _ENDPOINT_GAVE_UP.search(str(exc)):
        return True
    return any(_is_transient_one(link) for link in _chain(exc))


def _exception_of(state: Any) -> BaseException | None:
    if isinstance(state.data, BaseException):
        return state.data
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - the failure is what we want
        return exc
    return None


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry transient failures, fail fast on the rest."""
    exc = _exception_of(state)
    retry = exc is not None and is_transient(exc)
    logger = get_run_logger()
    if exc is not None:
        verdict = "transient, retrying" if retry else "deterministic, not retrying"
        logger.info("%s: %s (%s)", type(exc).__name__, exc, verdict)
    return retry


def retry_options(**extra: Any) -> dict[str, Any]:
    """The retry settings every task here shares (read when the task is built)."""
    return {
        "retries": RETRIES,
        "retry_delay_seconds": list(RETRY_DELAYS),
        "retry_condition_fn": retry_on_transient,
        **extra,
    }


# ------------------------------------------------------------------- stages


def resolve_stages(names: Iterable[str] | None, params: Params) -> list[Stage]:
    """The stages to run, in pipeline order (the stage table's).

    Args:
        names: stage names; None means every stage of the pipeline that
            applies to the profile (the zoo only under `mini`).
        params: the run's parameters.

    Raises:
        ConfigError: an unknown name, or none.
    """
    if names is None:
        return [s for s in STAGES if s.profiles is None or params.base.profile in s.profiles]
    names = list(names)
    unknown = [n for n in names if n not in STAGES_BY_NAME]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; the pipeline's stages are {[s.name for s in STAGES]}")
    if not names:
        raise ConfigError("stages is empty: name at least one stage")
    return [s for s in STAGES if s.name in set(names)]


def call_stage(stage: Stage, params: Params, scenario: str | None, *, log: Callable[[str], object]) -> dict:
    """Run one stage exactly as its DVC entry point does (`pmg.stages.table.run_stage`); return its metrics."""
    return run_pmg_stage(stage, params, scenario, log=log)


def stage_outputs(stage: Stage, params: Params, scenario: str | None) -> list[Path]:
    """Where the stage writes (`pmg.stages.catalogue.Catalogue.outputs`)."""
    return Catalogue(params).outputs(stage.name, scenario)


# -------------------------------------------------------------------- cache


def _fingerprint(files: Iterable[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def library_fingerprint() -> str:
    """sha256 over the `pmg` package's source (code, prompt templates, configs).

    What tasks that are not pipeline stages (the batch chain) cache on: the
    work happens in `pmg`, so a change anywhere in it invalidates them.
    """
    import pmg

    root = Path(pmg.__file__).resolve().parent
    files = [p for p in root.rglob("*") if p.suffix in {".py", ".yaml", ".yml", ".json"}]
    return _fingerprint(files, root)


@lru_cache(maxsize=None)
def stage_fingerprint(name: str) -> str:
    """sha256 over the source files of the `pmg` modules stage `name` runs (its `dvc.yaml` code deps).

    The same files `dvc repro` watches for this stage (`pmg.stages.deps`), so
    DVC and Prefect agree on when a stage's cached result is stale.
    """
    from pmg.stages.deps import PROJECT_ROOT, stage_source_files

    return _fingerprint(stage_source_files(name), PROJECT_ROOT)


@dataclass
class LibrarySource(CachePolicy):
    """Cache key component: the source of the `pmg` code a task runs.

    For a stage (a `stage` input naming one of the stage table), the
    modules that stage runs; otherwise the whole `pmg` package.
    """

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        name = inputs.get("stage")
        if isinstance(name, str) and name in STAGES_BY_NAME:
            return stage_fingerprint(name)
        return library_fingerprint()


#: Tasks over paths and primitives: inputs + task source + `pmg` source.
SOURCE_AND_INPUTS = INPUTS + TASK_SOURCE + LibrarySource()


# -------------------------------------------------------------------- tasks


@task(name="stage", cache_policy=SOURCE_AND_INPUTS, persist_result=True, **retry_options())
def run_stage(stage: str, params: Params, scenario: str | None = None, upstream: Any = None) -> dict:
    """One stage for one scenario (or for all, for `report` and the zoo).

    Args:
        stage: a name of the stage table (`STAGES`).
        params: the run's parameters.
        scenario: the scenario (None for stages over all scenarios).
        upstream: the metrics of the stages before it; part of the cache key,
            so a stage re-runs when what it reads was rebuilt.
    """
    logger = get_run_logger()
    return call_stage(STAGES_BY_NAME[stage], params, scenario, log=logger.info)


def outputs_missing(stage: Stage, params: Params, scenario: str | None) -> bool:
    """Whether a file or folder the stage writes is gone (False when unknown)."""
    outputs = stage_outputs(stage, params, scenario)
    return outputs is not None and not all(path.exists() for path in outputs)


def stage_task(stage: Stage, params: Params, scenario: str | None) -> Any:
    """`run_stage` named and tagged for one stage and scenario (retry options re-read).

    A cached result stands for files on disk: while any of the stage's outputs
    is missing (`rm -rf data/prepared`), the task ignores its cache entry and
    runs, then overwrites the entry under the same key.
    """
    label = f"{stage.name}[{scenario}]" if scenario else stage.name
    return run_stage.with_options(
        name=stage.name,
        task_run_name=label,
        tags={GPU_TAG} if stage.gpu else set(),
        refresh_cache=True if outputs_missing(stage, params, scenario) else None,
        **retry_options(),
    )


@task(name="dispatch-gpu-stage", cache_policy=NO_CACHE, persist_result=False, **retry_options())
def dispatch_gpu_stage(
    deployment: str, stage: str, params: dict[str, Any], scenario: str | None = None, upstream: Any = None
) -> dict:
    """Run a GPU stage as a flow run of `deployment` (on the `gpu` queue) and wait.

    Not tagged `gpu` itself: the flow run it starts holds the GPU slot, and a
    dispatcher holding one too would deadlock a limit of 1. A crashed flow
    run (its worker lost) raises `WorkerLost`, which is retried; a failed one
    raises `RemoteStageFailed` with the remote message, which is not (the
    remote task already retried what was transient).
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import MissingResult

    flow_run = run_deployment(
        deployment,
        parameters={"stage": stage, "params": params, "scenario": scenario, "upstream": upstream},
        flow_run_name=f"{stage}[{scenario}]" if scenario else stage,
        as_subflow=True,
        poll_interval=5,
    )
    state = flow_run.state
    where = f"flow run {flow_run.name!r} ({flow_run.id}) of {deployment}"
    if state is None or state.is_crashed():
        raise WorkerLost(f"{where} crashed: {state.message if state else 'no state'}")
    if not state.is_completed():
        raise RemoteStageFailed(f"{where} ended {state.name}: {state.message}")
    try:
        return state.result()
    except MissingResult as err:
        raise RemoteStageFailed(
            f"{where} completed but its result cannot be read here ({err}): GPU and CPU workers must share "
            "the result storage (PREFECT_LOCAL_STORAGE_PATH on a shared folder, or a remote "
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)"
        ) from None


@task(
    name="register-version",
    task_run_name="register-version[{scenario}/{alias}]",
    cache_policy=NO_CACHE,
    persist_result=False,
    **retry_options(),
)
def register_version(
    cfg: RegistryConfig,
    scenario: str,
    adapter_dir: str,
    metrics: dict[str, Any],
    params: dict[str, Any],
    reason: str,
    alias: str,
) -> dict[str, Any]:
    """Push the adapter as `scenario`'s next version; move its `alias` if the metric gates pass."""
    from pmg.registry import register_and_maybe_promote

    version, promoted, report = register_and_maybe_promote(
        cfg, adapter_dir, metrics, params, reason, scenario=scenario, alias=alias
    )
    get_run_logger().info(
        "%s version %s %s; gates:\n%s",
        scenario,
        version,
        f"promoted to {alias}" if promoted else f"NOT promoted to {alias}",
        report.describe(),
    )
    return {
        "scenario": scenario,
        "version": version,
        "promoted": promoted,
        "alias": alias,
        "gates": report.to_dict(),
        "gate_report": report.describe(),
    }


@task(
    name="pull-adapter",
    task_run_name="pull-adapter[{scenario}/{ref}]",
    cache_policy=NO_CACHE,
    persist_result=False,
    **retry_options(),
)
def pull_adapter(cfg: RegistryConfig, scenario: str, ref: str, cache_dir: str) -> dict[str, Any]:
    """`scenario`'s adapter that `ref` (version or alias) points at, pulled once.

    Version numbers are per scenario, so the cache folder is
    `cache_dir/<scenario>/v<N>`. A pull lands in a temporary folder and is
    renamed only once every checksum verified, so an existing folder is
    complete.
    """
    from pmg.registry import Registry

    registry = Registry(cfg, scenario=scenario)
    version = registry.resolve(ref)
    dest = Path(cache_dir) / scenario / f"v{version}"
    if dest.is_dir() and any(dest.iterdir()):
        get_run_logger().info("%s %s -> version %s, already pulled at %s", scenario, ref, version, dest)
    else:
        registry.pull(version, dest)
        get_run_logger().info(
            "%s %s -> version %s, pulled into %s (sha256 verified)", scenario, ref, version, dest
        )
    return {"scenario": scenario, "version": version, "adapter_dir": str(dest)}


def personalize_function() -> Callable[..., Any]:
    """`pmg.stages.personalize.personalize`, the per-pair chain of `pmg personalize`."""
    from pmg.stages.personalize import personalize

    return personalize


@task(
    name="personalize", cache_policy=SOURCE_AND_INPUTS, persist_result=True, tags={GPU_TAG}, **retry_options()
)
def personalize_pair(
    params: Params, scenario: str, user: str, target: str, adapter_dir: str | None
) -> Any:
    """One (scenario, user, target): the personalised image and its record.

    Cached on the inputs, the adapter folder included (`<scenario>/v<N>`), so
    a newly promoted adapter recomputes its scenario's pairs. `adapter_dir`
    None: the scenario has no adapter (keywords only).
    """
    return personalize_function()(params, scenario, user, target, adapter_dir=adapter_dir)
