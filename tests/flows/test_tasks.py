"""What retries, what a stage list resolves to, where stage outputs are: no server needed."""

from __future__ import annotations

from pathlib import Path

import botocore.exceptions
import httpx
import pandera.errors
import pytest
from botocore.exceptions import ClientError

from flows.tasks import (
    GPU_TAG,
    STAGES,
    STAGES_BY_NAME,
    RemoteStageFailed,
    WorkerLost,
    is_transient,
    personalize_function,
    resolve_stages,
    stage_outputs,
    stage_task,
)
from pmg.config import load_params
from pmg.errors import AssetError, ConfigError, DataError, ModelError, RegistryError

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _raised_from(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except Exception as caught:  # noqa: BLE001
        return caught


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


class KilledWorker(Exception):  # the name dask gives a worker that died
    pass


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("reset"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("slow"),
        httpx.ConnectError("no route"),
        httpx.ReadTimeout("read timed out"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        _client_error("SlowDown", 503),
        # What pmg.registry.s3 raises for an unreachable server (and its cause chain).
        RegistryError(
            "cannot reach S3 endpoint http://127.0.0.1:1 (bucket 'b') while listing versions: refused"
        ),
        _raised_from(
            RegistryError("S3 request failed"), botocore.exceptions.ReadTimeoutError(endpoint_url="x")
        ),
        _raised_from(RegistryError("S3 error 503"), _client_error("ServiceUnavailable", 503)),
        # What pmg.models.llm raises once an endpoint's own retries are spent.
        ModelError(
            "profiles.full.llm.url: endpoint http://h/v1/chat/completions (model 'm') failed 4 attempt(s); "
            "last: connection failed: ConnectError: refused"
        ),
        _raised_from(AssetError("download of x failed"), ConnectionResetError("reset")),
        KilledWorker("worker tcp://10.0.0.2 died"),
        WorkerLost("flow run crashed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        DataError("data/prepared/clothing/items.parquet", "bad", row=3, column="item_id"),
        ConfigError("params.yaml: unknown key 'prepare.x'"),
        # Deterministic even when raised while handling a transient error.
        _raised_from(DataError("x.parquet", "truncated"), ConnectionResetError("reset")),
        pandera.errors.SchemaError(schema=None, data=None, message="column 'user_id' not in dataframe"),
        RegistryError("credentials rejected by http://s3 (InvalidAccessKeyId)"),
        RegistryError("bucket 'pmg' does not exist at http://s3"),
        _raised_from(RegistryError("S3 error AccessDenied"), _client_error("AccessDenied", 403)),
        ModelError("profiles.full.llm.url: endpoint http://h (model 'm') refused the request: HTTP 400: bad"),
        ModelError("profiles.mini.llm.path = 'data/zoo/llm': no such folder"),
        RemoteStageFailed("flow run 'x' ended Failed: DataError: ..."),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_deterministic_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_an_exception_may_say_itself() -> None:
    flagged = RegistryError("promotion raced")
    flagged.transient = True  # type: ignore[attr-defined]
    assert is_transient(flagged)
    unflagged = ConnectionError("looks transient")
    unflagged.transient = False  # type: ignore[attr-defined]
    assert not is_transient(unflagged)


def test_the_flows_run_the_stage_table() -> None:
    """One stage list: the Prefect pipeline's is the stage table `dvc.yaml` is checked against."""
    from pmg.stages import table

    assert STAGES is table.STAGES and STAGES_BY_NAME is table.STAGES_BY_NAME
    names = [s.name for s in STAGES]
    assert (
        names.index("prepare") < names.index("describe") < names.index("keywords") < names.index("train_soft")
    )
    assert (
        names.index("train_soft") < names.index("generate") < names.index("select") < names.index("evaluate")
    )
    assert names.index("evaluate") < names.index("train_soft_ablations") < names.index("ablations")
    assert names[0] == "assets" and names[-1] == "report" and not STAGES_BY_NAME["report"].per_scenario
    gpu = {s.name for s in STAGES if s.gpu}
    assert gpu == {"zoo_clip", "zoo_sd", "train_soft", "generate", "evaluate", "train_soft_ablations", "ablations"}


def test_stages_resolve_in_pipeline_order_and_unknown_ones_are_named() -> None:
    params = load_params(PARAMS)
    assert [s.name for s in resolve_stages(["select", "prepare"], params)] == ["prepare", "select"]
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['prepar'\]"):
        resolve_stages(["prepar"], params)
    with pytest.raises(ConfigError, match="stages is empty"):
        resolve_stages([], params)


def test_default_stages_follow_the_profile() -> None:
    mini = [s.name for s in resolve_stages(None, load_params(PARAMS))]
    full = [s.name for s in resolve_stages(None, load_params(PARAMS, {"base.profile": "full"}))]
    assert mini == [s.name for s in STAGES]  # ablations included, as `dvc repro` runs them
    assert "zoo_sd" in mini and not any(name.startswith("zoo_") for name in full)
    assert {"train_soft_ablations", "ablations", "assets"} <= set(full)


def test_stage_outputs_are_the_catalogues(tmp_path: Path) -> None:
    params = load_params(
        PARAMS, {"prepare.out": str(tmp_path / "prepared"), "describe.out": str(tmp_path / "d")}
    )
    assert stage_outputs(STAGES_BY_NAME["prepare"], params, "emoji") == [
        tmp_path / "prepared" / "emoji",
        Path("metrics/prepare/emoji.json"),
        Path("metrics/timings/prepare/emoji.json"),
    ]
    assert stage_outputs(STAGES_BY_NAME["describe"], params, "emoji")[0] == tmp_path / "d" / "emoji.parquet"
    assert stage_outputs(STAGES_BY_NAME["zoo_sd"], params, None)[0] == Path(params.zoo.sd.out)


def test_stage_cache_keys_follow_the_code_the_stage_runs() -> None:
    """Prefect and `dvc repro` agree on staleness: a stage's key covers its `dvc.yaml` code deps only."""
    from flows.tasks import stage_fingerprint
    from pmg.stages.deps import stage_source_files

    files = {p.as_posix() for p in stage_source_files("select")}
    assert any(f.endswith("pmg/method/select.py") for f in files)
    assert not any(f.endswith("pmg/method/keywords.py") for f in files)  # select does not run it
    assert stage_fingerprint("select") != stage_fingerprint("keywords")


def test_gpu_stages_carry_the_gpu_tag_and_the_retry_policy() -> None:
    params = load_params(PARAMS)
    for stage in STAGES:
        built = stage_task(stage, params, "emoji" if stage.per_scenario else None)
        assert (GPU_TAG in built.tags) == stage.gpu
        assert built.retries == 3 and built.retry_delay_seconds == [10, 60, 300]
        assert built.retry_condition_fn is not None and built.persist_result


def test_batch_chain_function_is_the_cli_one() -> None:
    from pmg.stages.personalize import personalize

    assert personalize_function() is personalize
