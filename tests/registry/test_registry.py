"""The registry against a real S3 server (SeaweedFS): versions, aliases, failures."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from pmg.config import MetricGate, RegistryConfig
from pmg.errors import RegistryError
from pmg.registry import (
    IdenticalAdapter,
    PromotionRefused,
    Registry,
    init_registry,
    register_and_maybe_promote,
)
from pmg.registry.manifest import sha256_file

GOOD = {"lpips_history": 0.40, "lpips_target": 0.50, "ssim_target": 0.30}
PARAMS = {"train_soft": {"num_tokens": 4, "prefix_len": 2, "lr": 0.001}}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _keys(server: Any, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


# ------------------------------------------------------------------ round trip


def test_push_list_pull_round_trip(
    registry_cfg: RegistryConfig, adapter_dir: Path, make_adapter: Any, pairs_table: Any, tmp_path: Path
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\n")
    pairs = pairs_table()
    manifest = registry.push(
        adapter_dir, {"clothing": GOOD}, PARAMS, dvc_lock=lock, pairs=pairs, overrides={"train_soft.steps": 5}
    )

    assert manifest.version == 1
    assert set(manifest.files) == {"adapter.safetensors", "adapter_config.json", "projection/w.safetensors"}
    for name, entry in manifest.files.items():
        assert entry.sha256 == sha256_file(adapter_dir / name)
    assert manifest.metrics == {f"clothing.{k}": v for k, v in GOOD.items()}  # nested -> dotted
    assert manifest.params == PARAMS and manifest.overrides == {"train_soft.steps": 5}
    assert manifest.dvc_lock_sha256 == sha256_file(lock)
    assert len(manifest.git_revision) == 40 or manifest.git_revision == "unknown"
    assert manifest.git_dirty in (True, False, None)
    assert manifest.created_by == "tester" and manifest.created_at.endswith("Z")
    assert manifest.evaluation["pairs.parquet"].sha256 == sha256_file(pairs)
    assert registry.pairs_table(1).equals(__import__("pandas").read_parquet(pairs))  # verified read-back

    # The same adapter files again are not a new version, whatever the metrics say.
    with pytest.raises(IdenticalAdapter, match="byte-identical to clothing version 1") as same:
        registry.push(adapter_dir, {"lpips_history": 0.1}, PARAMS)
    assert same.value.version == 1
    second = registry.push(make_adapter(2), GOOD, PARAMS, dvc_lock=None, dirty=(True, ("pmg/x.py",)))
    assert second.version == 2 and second.dvc_lock_sha256 is None and second.evaluation == {}
    assert (second.git_dirty, second.git_dirty_paths) == (True, ("pmg/x.py",))
    assert registry.pairs_table(2) is None

    listed = registry.versions()
    assert [info.version for info in listed] == [1, 2]
    assert listed[0].manifest == manifest

    dest = tmp_path / "pulled"
    pulled = registry.pull("v1", dest)
    assert pulled == manifest
    assert _files(dest) == _files(adapter_dir)  # the adapter only: the evaluation stays in the registry
    # The manifest in the bucket is the committed one, written last.
    body = registry.bucket.get("pmg/registry/clothing/versions/1/manifest.json", "test")
    assert body is not None and json.loads(body[0])["version"] == 1


def test_a_bad_pairs_table_is_refused_before_any_request(
    registry_cfg: RegistryConfig, adapter_dir: Path, tmp_path: Path, s3_env: Any
) -> None:
    from pmg.errors import DataError

    registry = Registry(registry_cfg, scenario="clothing")
    with pytest.raises(DataError, match="per-pair evaluation table does not exist"):
        registry.push(adapter_dir, GOOD, PARAMS, pairs=tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    __import__("pandas").DataFrame({"user_id": ["u1"]}).to_parquet(bad)
    with pytest.raises(DataError, match="bad.parquet.*PairMetrics"):
        registry.push(adapter_dir, GOOD, PARAMS, pairs=bad)
    assert _keys(s3_env, registry_cfg.bucket) == []


def test_versions_are_immutable(registry_cfg: RegistryConfig, make_adapter: Any, tmp_path: Path) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    first = make_adapter(1)
    registry.push(first, GOOD, PARAMS)

    with pytest.raises(RegistryError, match="version 1 already exists .* immutable"):
        registry.push(make_adapter(2), GOOD, PARAMS, version=1)
    # Object level: nothing under a version can be replaced.
    key = "pmg/registry/clothing/versions/1/files/adapter.safetensors"
    assert registry.bucket.put_new(key, b"tampered", "test") is False
    assert registry.bucket.put_new("pmg/registry/clothing/versions/1/manifest.json", b"{}", "test") is False

    registry.pull(1, tmp_path / "v1")
    assert _files(tmp_path / "v1") == _files(first)
    assert [info.version for info in registry.versions()] == [1]
    # An explicit free number is taken as given.
    assert registry.push(make_adapter(3), GOOD, PARAMS, version=5).version == 5


def test_racing_pushes_take_distinct_numbers(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any
) -> None:
    """Every pusher lists the same highest number, then all claim the same next one."""
    pushers = 4
    listed_together = threading.Barrier(pushers, timeout=20)
    folders = [make_adapter(seed) for seed in range(pushers)]
    results: dict[int, int] = {}
    errors: list[BaseException] = []
    conflicts: list[int] = []

    def push(index: int) -> None:
        client = s3_env.client()
        # Count 412 answers: proof that the claims really collided.
        client.meta.events.register(
            "after-call.s3.PutObject",
            lambda http_response, **_: conflicts.append(1) if http_response.status_code == 412 else None,
        )
        registry = Registry(registry_cfg, client, scenario="clothing")
        listing = registry._claimed_numbers

        def listed_then_wait() -> list[int]:
            numbers = listing()
            listed_together.wait()
            return numbers

        registry._claimed_numbers = listed_then_wait  # type: ignore[method-assign]
        try:
            results[index] = registry.push(folders[index], {**GOOD, "run": float(index)}, PARAMS).version
        except BaseException as err:  # noqa: BLE001 - re-raised below in the main thread
            errors.append(err)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(pushers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(results.values()) == list(range(1, pushers + 1))
    assert len(conflicts) >= pushers - 1  # every loser of round one got a 412

    registry = Registry(registry_cfg, scenario="clothing")
    listed = {info.version: info.manifest for info in registry.versions()}
    assert sorted(listed) == list(range(1, pushers + 1))
    for index, version in results.items():
        # Each version holds its own pusher's files and metrics.
        assert listed[version].metrics["run"] == float(index)
        assert listed[version].files["adapter.safetensors"].sha256 == sha256_file(
            folders[index] / "adapter.safetensors"
        )


# -------------------------------------------------------------------- aliases


def test_promotion_passes_and_refuses_by_paired_gates(
    registry_cfg: RegistryConfig, make_adapter: Any, pairs_table: Any
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    v1 = registry.push(make_adapter(1), GOOD, PARAMS, pairs=pairs_table(0.40, 0.50)).version
    # Production only takes a version that has been staging (registry.promotion_order).
    with pytest.raises(PromotionRefused, match="version 1 has never been 'staging'.*promote it to staging first"):
        registry.promote(v1, to="production", reason="first model")
    assert registry.promote(v1, to="staging", reason="candidate").changed
    # No production yet and no thresholds configured: the gates pass.
    move = registry.promote(v1, to="production", reason="first model")
    assert (move.from_version, move.to_version, move.changed) == (None, 1, True)
    assert move.report is not None and move.report.passed

    # Worse on every pair by 0.05 (the tolerance is 0.01): refused, both means and the bound named.
    worse = {**GOOD, "lpips_history": 0.45}
    v2 = registry.push(make_adapter(2), worse, PARAMS, pairs=pairs_table(0.45, 0.50)).version
    registry.promote(v2, to="staging", reason="inspect")  # staging is not gated by default
    with pytest.raises(PromotionRefused) as refused:
        registry.promote(v2, to="production", reason="retrained")
    message = str(refused.value)
    assert "lpips_history" in message and "lpips_target" not in message  # only the failed gate
    assert "over 40 common pairs: candidate 0.45 vs production v1 0.4" in message
    assert [r.metric for r in refused.value.report.failed] == ["lpips_history"]
    assert registry.resolve("production") == 1

    # Within tolerance on every pair: accepted.
    v3 = registry.push(make_adapter(3), GOOD, PARAMS, pairs=pairs_table(0.405, 0.515)).version
    registry.promote(v3, to="staging", reason="candidate")
    assert registry.promote(v3, to="production", reason="as good").to_version == 3

    # A version without a per-pair table cannot be compared with production: refused.
    v4 = registry.push(make_adapter(4), {"lpips_history": 0.1, "lpips_target": 0.1}, PARAMS).version
    registry.promote(v4, to="staging", reason="candidate")
    with pytest.raises(PromotionRefused, match="candidate carries no per-pair evaluation table"):
        registry.promote(v4, to="production", reason="no pairs")

    # --force moves it anyway, and the history says so.
    forced = registry.promote(v2, to="production", reason="hotfix", force=True)
    assert forced.forced and forced.to_version == 2
    last = registry.alias_history("production")[-1]
    assert last["forced"] is True and last["gates"]["passed"] is False
    assert (last["from_version"], last["to_version"], last["by"], last["reason"]) == (3, 2, "tester", "hotfix")
    # A version that never was staging, forced: recorded as out of order too.
    v5 = registry.push(make_adapter(5), GOOD, PARAMS, pairs=pairs_table(0.40, 0.50)).version
    registry.promote(v5, to="production", reason="emergency", force=True)
    assert "never been 'staging'" in registry.alias_history("production")[-1]["out_of_order"]
    assert {info.version: info.aliases for info in registry.versions()}[4] == ("staging",)


def test_promotion_order_is_configurable(
    s3_env: Any, bucket_name: str, make_adapter: Any, cfg_for: Any
) -> None:
    s3_env.client().create_bucket(Bucket=bucket_name)
    registry = Registry(cfg_for(s3_env.endpoint_url, bucket_name, promotion_order=()), scenario="clothing")
    version = registry.push(make_adapter(1), GOOD, PARAMS).version
    assert registry.promote(version, to="production", reason="no order").changed
    assert registry.order_violation(version, "production") is None


def test_thresholds_apply_without_production(
    s3_env: Any, bucket_name: str, make_adapter: Any, cfg_for: Any
) -> None:
    s3_env.client().create_bucket(Bucket=bucket_name)
    gates = (
        MetricGate(metric="lpips_history", direction="lower", threshold=0.3),
        MetricGate(metric="ssim_target", direction="higher", threshold=0.2),
    )
    registry = Registry(cfg_for(s3_env.endpoint_url, bucket_name, gates=gates), scenario="clothing")
    version = registry.push(make_adapter(1), GOOD, PARAMS).version
    registry.promote(version, to="staging", reason="first")
    with pytest.raises(PromotionRefused, match=r"lpips_history .*candidate 0\.4 vs threshold 0\.3"):
        registry.promote(version, to="production", reason="first")
    good = registry.push(make_adapter(2), {**GOOD, "lpips_history": 0.25}, PARAMS).version
    registry.promote(good, to="staging", reason="first")
    assert registry.promote(good, to="production", reason="first").changed


def test_rollback_restores_previous_production(
    registry_cfg: RegistryConfig, make_adapter: Any, pairs_table: Any, tmp_path: Path
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    for seed in (1, 2, 3):
        version = registry.push(make_adapter(seed), GOOD, PARAMS, pairs=pairs_table()).version
        registry.promote(version, to="staging", reason=f"model {seed}")
        registry.promote(version, to="production", reason=f"model {seed}")
    assert registry.resolve("production") == 3

    move = registry.rollback("production", reason="v3 broke the gallery")
    assert (move.from_version, move.to_version) == (3, 2)
    assert registry.resolve("production") == 2
    assert registry.rollback("production").to_version == 1
    with pytest.raises(RegistryError, match="no previous version to roll back to"):
        registry.rollback("production")

    history = registry.alias_history("production")
    assert [(h["action"], h["from_version"], h["to_version"]) for h in history] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    assert history[3]["reason"] == "v3 broke the gallery" and history[3]["by"] == "tester"
    registry.pull("production", tmp_path / "prod")
    assert _files(tmp_path / "prod") == _files(make_adapter(1))


def test_status_has_one_row_per_alias(registry_cfg: RegistryConfig, make_adapter: Any, pairs_table: Any) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    assert [(s.alias, s.version, s.action) for s in registry.status()] == [
        ("staging", None, None),
        ("production", None, None),
    ]
    registry.push(make_adapter(1), GOOD, PARAMS, pairs=pairs_table())
    registry.promote(1, to="staging", reason="candidate")
    registry.promote(1, to="production", reason="hotfix", force=True)
    staging, production = registry.status()
    assert (staging.version, staging.action, staging.forced) == (1, "promote", False)
    assert (production.version, production.by, production.forced, production.reason) == (1, "tester", True, "hotfix")
    assert production.metrics == GOOD and production.at is not None


def test_check_writable_probes_and_cleans_up(
    s3_env: Any, registry_cfg: RegistryConfig, dead_endpoint: str, cfg_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    assert registry.check_writable()["bucket"] == registry_cfg.bucket
    assert _keys(s3_env, registry_cfg.bucket) == []  # the probe is removed
    with pytest.raises(RegistryError, match="cannot reach S3 endpoint"):
        Registry(cfg_for(dead_endpoint, "pmg", connect_timeout=0.5, max_attempts=0), scenario="clothing").check_writable()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(RegistryError, match="credentials rejected"):
        Registry(registry_cfg, scenario="clothing").check_writable()


def test_racing_promotions_keep_a_consistent_history(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any
) -> None:
    """Movers that all read the alias before any writes: If-Match lets one win per round."""
    base = Registry(registry_cfg, scenario="clothing")
    versions = [base.push(make_adapter(seed), GOOD, PARAMS).version for seed in range(3)]
    read_together = threading.Barrier(len(versions), timeout=20)
    errors: list[BaseException] = []

    def promote(version: int) -> None:
        registry = Registry(registry_cfg, s3_env.client(), scenario="clothing")
        read = registry._read_alias
        first = [True]

        def read_then_wait(name: str) -> Any:
            alias = read(name)
            if name == "staging" and first[0]:
                first[0] = False
                read_together.wait()
            return alias

        registry._read_alias = read_then_wait  # type: ignore[method-assign]
        try:
            registry.promote(version, to="staging", reason=f"candidate {version}")
        except BaseException as err:  # noqa: BLE001 - re-raised below in the main thread
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    history = base.alias_history("staging")
    assert sorted(entry["to_version"] for entry in history) == versions  # no move lost
    chain = [None] + [entry["to_version"] for entry in history]
    assert [entry["from_version"] for entry in history] == chain[:-1]  # each move saw the one before
    assert base.resolve("staging") == history[-1]["to_version"]


def test_register_and_maybe_promote(registry_cfg: RegistryConfig, make_adapter: Any, pairs_table: Any) -> None:
    first = register_and_maybe_promote(
        registry_cfg, make_adapter(1), GOOD, PARAMS, reason="nightly retrain", scenario="clothing",
        pairs=pairs_table(0.40, 0.50),
    )
    # Through the promotion order: staging, then production.
    assert (first.version, first.promoted, first.report.passed) == (1, True, True)
    assert [(m.alias, m.to_version) for m in first.moves] == [("staging", 1), ("production", 1)]
    worse = register_and_maybe_promote(
        registry_cfg, make_adapter(2), {**GOOD, "lpips_target": 0.9}, PARAMS, reason="nightly retrain",
        scenario="clothing", pairs=pairs_table(0.40, 0.90),
    )
    assert (worse.version, worse.promoted) == (2, False)
    assert [(m.alias, m.to_version) for m in worse.moves] == [("staging", 2)]  # staged, not promoted
    assert worse.refused is not None and "refused: 1 of 2 gates failed" in worse.refused
    assert [r.metric for r in worse.report.failed] == ["lpips_target"] and worse.report.baseline_version == 1
    registry = Registry(registry_cfg, scenario="clothing")
    assert (registry.resolve("production"), registry.resolve("staging")) == (1, 2)
    with pytest.raises(IdenticalAdapter):
        register_and_maybe_promote(registry_cfg, make_adapter(2), GOOD, PARAMS, reason="again", scenario="clothing")


# ------------------------------------------------------------------ scenarios


def test_scenarios_have_their_own_versions_and_aliases(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any, pairs_table: Any, tmp_path: Path
) -> None:
    clothing = Registry(registry_cfg, scenario="clothing")
    movies = Registry(registry_cfg, scenario="movies")
    assert [clothing.push(make_adapter(seed), GOOD, PARAMS, pairs=pairs_table()).version for seed in (1, 2)] == [1, 2]
    clothing.promote(1, to="staging", reason="first clothing model")
    clothing.promote(1, to="production", reason="first clothing model")

    # Promoting clothing gave movies nothing: no versions, no production.
    assert movies.versions() == []
    with pytest.raises(RegistryError, match=r"'production' points at no version yet in s3://.*/movies/"):
        movies.resolve("production")
    with pytest.raises(RegistryError, match="version 1 does not exist"):
        movies.pull(1, tmp_path / "nothing")

    # Movies' first push is its version 1; its gates compare with movies' production (none yet),
    # not with clothing's: far worse metrics than clothing v1 still pass.
    worse = {**GOOD, "lpips_history": 0.9}
    first = movies.push(make_adapter(3), worse, PARAMS)
    assert (first.version, first.scenario) == (1, "movies")
    movies.promote(1, to="staging", reason="first movies model")
    move = movies.promote(1, to="production", reason="first movies model")
    assert move.report is not None and move.report.passed and move.report.baseline_version is None

    assert clothing.resolve("production") == 1 and movies.resolve("production") == 1
    clothing.pull("production", tmp_path / "clothing")
    movies.pull("production", tmp_path / "movies")
    assert _files(tmp_path / "clothing") == _files(make_adapter(1))
    assert _files(tmp_path / "movies") == _files(make_adapter(3))

    # Gates, history and rollback stay within a scenario.
    done = register_and_maybe_promote(
        registry_cfg, make_adapter(4), worse, PARAMS, reason="nightly", scenario="clothing",
        pairs=pairs_table(0.9, 0.5),
    )
    assert (done.version, done.promoted, done.report.baseline_version) == (3, False, 1)  # against clothing v1
    clothing.promote(2, to="staging", reason="second clothing model")
    clothing.promote(2, to="production", reason="second clothing model")
    assert clothing.rollback("production").to_version == 1
    assert [h["action"] for h in movies.alias_history("production")] == ["promote"]
    assert [h["to_version"] for h in movies.alias_history("staging")] == [1]
    assert [info.version for info in movies.versions()] == [1]
    assert [info.version for info in clothing.versions()] == [1, 2, 3]

    keys = _keys(s3_env, registry_cfg.bucket)
    assert {key.split("/")[2] for key in keys} == {"clothing", "movies"}  # pmg/registry/<scenario>/...
    assert "pmg/registry/movies/aliases/production.json" in keys
    assert "pmg/registry/clothing/versions/3/manifest.json" in keys


def test_push_refuses_an_adapter_of_another_scenario(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any
) -> None:
    folder = make_adapter(1)
    config = folder / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "scenario": "clothing"}))

    with pytest.raises(
        RegistryError,
        match=r"adapter_config\.json is an adapter of scenario 'clothing', not 'movies': "
        r"push it with scenario 'clothing' \(--scenario clothing\)",
    ):
        Registry(registry_cfg, scenario="movies").push(folder, GOOD, PARAMS)
    assert _keys(s3_env, registry_cfg.bucket) == []  # refused before any request

    manifest = Registry(registry_cfg, scenario="clothing").push(folder, GOOD, PARAMS)
    assert (manifest.version, manifest.scenario) == (1, "clothing")

    config.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON .*cannot check which scenario"):
        Registry(registry_cfg, scenario="clothing").push(folder, GOOD, PARAMS)


@pytest.mark.parametrize("name", ["", "a/b", "..", "clo thing", "x.y", "movies/", "emoji\n", None])
def test_scenario_names_are_checked(name: Any) -> None:
    with pytest.raises(RegistryError, match=r"invalid registry scenario .*letters, digits, '_' and '-'"):
        Registry(RegistryConfig(), scenario=name)


def test_a_registry_needs_a_scenario() -> None:
    with pytest.raises(TypeError, match="scenario"):
        Registry(RegistryConfig())  # type: ignore[call-arg]


# ------------------------------------------------------------------ integrity


def test_corrupted_object_is_refused_by_pull(
    s3_env: Any, registry_cfg: RegistryConfig, adapter_dir: Path, tmp_path: Path
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    registry.push(adapter_dir, GOOD, PARAMS)
    key = "pmg/registry/clothing/versions/1/files/projection/w.safetensors"
    original = (adapter_dir / "projection" / "w.safetensors").read_bytes()
    flipped = bytes([original[-1] ^ 0xFF])
    s3_env.client().put_object(Bucket=registry_cfg.bucket, Key=key, Body=original[:-1] + flipped)

    dest = tmp_path / "out" / "adapter"
    with pytest.raises(
        RegistryError, match=r"version 1 is corrupted: s3://.*projection/w\.safetensors has sha256"
    ):
        registry.pull(1, dest)
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary folder left either

    # A non-empty destination is refused before anything is downloaded.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(RegistryError, match="not an empty folder"):
        registry.pull(1, busy)
    assert _files(busy) == {"keep.txt": b"mine"}


def test_interrupted_push_is_invisible(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any, tmp_path: Path
) -> None:
    """The connection dies after the first file: no version appears, the number is not reused."""
    client = s3_env.client()
    uploads: list[str] = []

    def die_on_second_file(params: dict[str, Any], **_: Any) -> None:
        if "/files/" in params["Key"]:
            uploads.append(params["Key"])
            if len(uploads) == 2:
                raise EndpointConnectionError(endpoint_url=s3_env.endpoint_url)

    client.meta.events.register("before-parameter-build.s3.PutObject", die_on_second_file)
    with pytest.raises(RegistryError, match=r"cannot reach S3 endpoint .* while uploading"):
        Registry(registry_cfg, client, scenario="clothing").push(make_adapter(1), GOOD, PARAMS)
    keys = _keys(s3_env, registry_cfg.bucket)
    assert "pmg/registry/clothing/versions/1/claim.json" in keys and any("/files/" in key for key in keys)
    assert not any(key.endswith("manifest.json") for key in keys)

    registry = Registry(registry_cfg, scenario="clothing")
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="version 1 does not exist .*did not complete"):
        registry.pull(1, tmp_path / "never")
    with pytest.raises(RegistryError, match="version 1 does not exist"):
        registry.promote(1, to="production", reason="x")
    assert not (tmp_path / "never").exists()

    # The next push takes the next number and is the only visible version.
    assert registry.push(make_adapter(2), GOOD, PARAMS).version == 2
    assert [info.version for info in registry.versions()] == [2]


def test_version_missing_a_file_is_not_listed(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any, pairs_table: Any
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    for seed in (1, 2, 3):
        registry.push(make_adapter(seed), GOOD, PARAMS, pairs=pairs_table())
    s3_env.client().delete_object(
        Bucket=registry_cfg.bucket, Key="pmg/registry/clothing/versions/1/files/adapter_config.json"
    )
    s3_env.client().delete_object(
        Bucket=registry_cfg.bucket, Key="pmg/registry/clothing/versions/3/evaluation/pairs.parquet"
    )
    assert [info.version for info in registry.versions()] == [2]


# -------------------------------------------------------------------- failures


def test_server_down_fails_fast_and_clearly(
    s3_env: Any, dead_endpoint: str, bucket_name: str, adapter_dir: Path, cfg_for: Any
) -> None:
    endpoint = dead_endpoint
    cfg = cfg_for(endpoint, bucket_name, max_attempts=1, connect_timeout=1.0)
    registry = Registry(cfg, scenario="clothing")
    start = time.monotonic()
    with pytest.raises(RegistryError) as err:
        registry.push(adapter_dir, GOOD, PARAMS)
    assert time.monotonic() - start < 15
    message = str(err.value)
    assert message.startswith(f"cannot reach S3 endpoint {endpoint} (bucket {bucket_name!r})")
    assert "after 2 attempts" in message and "\n" not in message
    with pytest.raises(RegistryError, match="cannot reach S3 endpoint .* while listing versions"):
        registry.versions()


def test_wrong_credentials_are_named(
    registry_cfg: RegistryConfig, adapter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(RegistryError) as err:
        Registry(registry_cfg, scenario="clothing").push(adapter_dir, GOOD, PARAMS)
    assert str(err.value).startswith(f"credentials rejected by {registry_cfg.endpoint_url}")
    assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in str(err.value)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(
        RegistryError, match=r"credentials rejected by .*\(InvalidAccessKeyId\) while listing"
    ):
        Registry(registry_cfg, scenario="clothing").versions()


def test_missing_bucket_is_named_and_init_creates_it(
    s3_env: Any, bucket_name: str, adapter_dir: Path, cfg_for: Any
) -> None:
    registry = Registry(cfg_for(s3_env.endpoint_url, bucket_name), scenario="clothing")
    with pytest.raises(RegistryError, match=rf"bucket '{bucket_name}' does not exist .*pmg registry init"):
        registry.push(adapter_dir, GOOD, PARAMS)
    with pytest.raises(RegistryError, match=rf"bucket '{bucket_name}' does not exist"):
        registry.versions()
    outcome = init_registry(registry.cfg)
    assert outcome == {
        "bucket_created": True,
        "conditional_writes": True,
        "bucket": bucket_name,
        "endpoint": s3_env.endpoint_url,
    }
    assert init_registry(registry.cfg)["bucket_created"] is False
    assert not any("_probe" in key for key in _keys(s3_env, bucket_name))  # the probe is removed
    assert registry.push(adapter_dir, GOOD, PARAMS).version == 1

    other = Registry(cfg_for(s3_env.endpoint_url, bucket_name + "-new"), scenario="clothing")
    assert other.push(adapter_dir, GOOD, PARAMS, create_bucket=True).version == 1


def test_bad_inputs_fail_before_any_request(
    registry_cfg: RegistryConfig, tmp_path: Path, adapter_dir: Path
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="holds no files"):
        registry.push(tmp_path / "empty", GOOD, PARAMS)
    with pytest.raises(RegistryError, match="metric 'lpips' is not a number"):
        registry.push(adapter_dir, {"lpips": "low"}, PARAMS)
    with pytest.raises(RegistryError, match="metric 'x.nan' is not finite"):
        registry.push(adapter_dir, {"x": {"nan": float("nan")}}, PARAMS)
    with pytest.raises(RegistryError, match="unknown alias 'prod'"):
        registry.resolve("prod")
    assert _keys_empty(registry)


def _keys_empty(registry: Registry) -> bool:
    return registry.bucket.list_keys("", "test") == {}
