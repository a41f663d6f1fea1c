"""`pmg registry ...` end to end against the test S3 server, with the real params.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pmg.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _pmg(capsys: pytest.CaptureFixture[str], endpoint: str, bucket: str, *args: str) -> tuple[int, str, str]:
    code = main(
        [
            "--params",
            str(ROOT / "params.yaml"),
            "--set",
            f"registry.endpoint_url={endpoint}",
            "--set",
            f"registry.bucket={bucket}",
            "--set",
            "registry.max_attempts=1",
            "registry",
            *args,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_push_list_promote_rollback_pull(
    s3_env: Any,
    bucket_name: str,
    make_adapter: Any,
    pairs_table: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # No Prefect API, whatever an earlier test left in the Prefect profile of this PREFECT_HOME.
    monkeypatch.setattr("pmg.registry.announce.prefect_api", lambda: None)

    def pmg(*args: str) -> tuple[int, str, str]:
        return _pmg(capsys, s3_env.endpoint_url, bucket_name, *args)

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"lpips_history": 0.4, "lpips_target": 0.5}))
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps({"lpips_history": 0.5, "lpips_target": 0.5}))
    good_pairs, worse_pairs = str(pairs_table(0.40, 0.50)), str(pairs_table(0.50, 0.50))

    clothing = ("--scenario", "clothing")
    code, _, err = pmg("push", str(make_adapter(1)), "--metrics", str(metrics), *clothing)
    assert code == 2 and "does not exist" in err and "pmg registry init" in err and "Traceback" not in err
    assert pmg("init")[0] == 0  # the bucket serves every scenario: no --scenario

    code, out, _ = pmg(
        "push", str(make_adapter(1)), "--metrics", str(metrics), "--pairs", good_pairs, "--section", "registry",
        *clothing,
    )
    assert code == 0 and out.startswith("pushed clothing version 1 (3 files + per-pair table)")
    assert out.rstrip().endswith(f"s3://{bucket_name}/pmg/registry/clothing/")
    assert pmg("push", str(make_adapter(2)), "--metrics", str(worse), "--pairs", worse_pairs, *clothing)[0] == 0
    assert pmg("push", str(make_adapter(3)), "--metrics", str(metrics), "--pairs", good_pairs, *clothing)[0] == 0
    code, out, err = pmg("push", str(make_adapter(3)), "--metrics", str(metrics), *clothing)
    assert code == 2 and "byte-identical to clothing version 3" in err

    code, out, err = pmg("promote", "1", "--to", "production", "--reason", "first", *clothing)
    assert code == 2 and "has never been 'staging'" in err
    assert "pmg: refused promotion not announced to Prefect: " in err
    for version in ("1", "2", "3"):
        assert pmg("promote", version, "--to", "staging", "--reason", "candidate", *clothing)[0] == 0
    code, out, err = pmg("promote", "1", "--to", "production", "--reason", "first", *clothing)
    assert code == 0 and "clothing production: none -> 1" in out
    assert "alias move not announced to Prefect (event, pmg-registry artifact): " in err
    code, out, err = pmg("promote", "2", "--to", "production", "--reason", "retrained", *clothing)
    assert code == 2 and out == ""
    assert "refused: 1 of 2 gates failed against production (version 1)" in err
    assert "FAIL lpips_history (lower is better) over 40 common pairs: candidate 0.5 vs production v1 0.4" in err
    assert "Traceback" not in err
    code, out, _ = pmg("promote", "3", "--to", "production", "--reason", "same quality", *clothing)
    assert code == 0 and "PASS lpips_target" in out and "clothing production: 1 -> 3" in out

    code, out, _ = pmg("list", *clothing)
    rows = out.splitlines()
    assert rows[0].split()[:3] == ["ver", "created", "(UTC)"] and len(rows) == 4
    assert all(len(row) <= 120 for row in rows)
    assert "staging,production" in rows[3] and "0.4000" in rows[3] and " yes " in rows[3]
    code, out, _ = pmg("list", "--json", *clothing)
    listed = json.loads(out)
    assert [row["version"] for row in listed] == [1, 2, 3]
    assert {row["scenario"] for row in listed} == {"clothing"}
    assert set(listed[0]["params"]) == {"registry"}  # --section
    assert set(listed[1]["params"]) >= {"base", "prepare", "registry"}  # default: all sections
    assert listed[0]["overrides"] == {
        "registry.endpoint_url": s3_env.endpoint_url,
        "registry.bucket": bucket_name,
        "registry.max_attempts": 1,
    }

    code, out, _ = pmg("status", *clothing)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and all(len(line) <= 120 for line in lines)
    assert lines[1].split()[:3] == ["clothing", "staging", "3"]
    assert lines[2].split()[:3] == ["clothing", "production", "3"] and "tester" in lines[2]

    code, out, _ = pmg("rollback", "production", "--reason", "bad gallery", *clothing)
    assert code == 0 and "clothing production: 3 -> 1 (rolled back)" in out
    code, out, _ = pmg("history", "production", *clothing)
    assert [line.split()[1] for line in out.splitlines()] == ["promote", "promote", "rollback"]

    code, out, _ = pmg("pull", "production", str(tmp_path / "prod"), *clothing)
    assert code == 0 and "pulled clothing version 1" in out and "sha256 verified" in out
    assert (tmp_path / "prod" / "adapter.safetensors").read_bytes() == (
        make_adapter(1) / "adapter.safetensors"
    ).read_bytes()


def test_cli_errors_are_one_line(
    s3_env: Any,
    dead_endpoint: str,
    bucket_name: str,
    adapter_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"lpips_history": 0.4}))

    code, _, err = _pmg(
        capsys,
        dead_endpoint,
        bucket_name,
        *("push", str(adapter_dir), "--metrics", str(metrics), "--scenario", "emoji"),
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"pmg: error: cannot reach S3 endpoint {dead_endpoint} (bucket '{bucket_name}')")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    code, _, err = _pmg(capsys, s3_env.endpoint_url, bucket_name, "list", "--scenario", "movies")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"pmg: error: credentials rejected by {s3_env.endpoint_url} (")
    assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in err

    code, _, err = _pmg(
        capsys,
        s3_env.endpoint_url,
        bucket_name,
        *("push", str(adapter_dir), "--metrics", "nope.json", "--scenario", "clothing"),
    )
    assert code == 2 and "nope.json: metrics file does not exist" in err


def test_cli_scenarios_are_separate(
    s3_env: Any, bucket_name: str, make_adapter: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def pmg(*args: str) -> tuple[int, str, str]:
        return _pmg(capsys, s3_env.endpoint_url, bucket_name, *args)

    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"lpips_history": 0.4, "lpips_target": 0.5}))
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps({"lpips_history": 0.9, "lpips_target": 0.9}))
    assert pmg("init")[0] == 0
    assert pmg("push", str(make_adapter(1)), "--metrics", str(metrics), "--scenario", "clothing")[0] == 0
    assert pmg("promote", "1", "--to", "staging", "--reason", "first", "--scenario", "clothing")[0] == 0
    assert pmg("promote", "1", "--to", "production", "--reason", "first", "--scenario", "clothing")[0] == 0

    # Clothing's version and production are not movies'.
    code, out, _ = pmg("list", "--scenario", "movies")
    assert code == 0 and out == "no versions of movies\n"
    code, _, err = pmg("pull", "production", str(tmp_path / "movies"), "--scenario", "movies")
    assert code == 2 and "'production' points at no version yet" in err and "/movies/" in err
    assert not (tmp_path / "movies").exists()

    # An adapter trained for clothing is refused by movies, in one line.
    tagged = make_adapter(2)
    config = tagged / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "scenario": "clothing"}))
    code, out, err = pmg("push", str(tagged), "--metrics", str(metrics), "--scenario", "movies")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "is an adapter of scenario 'clothing', not 'movies'" in err and "Traceback" not in err

    # Movies' first push is its version 1, gated against movies' production (none), not clothing's.
    code, out, _ = pmg("push", str(make_adapter(3)), "--metrics", str(worse), "--scenario", "movies")
    assert code == 0 and out.startswith("pushed movies version 1 ")
    assert pmg("promote", "1", "--to", "staging", "--reason", "first", "--scenario", "movies")[0] == 0
    code, out, _ = pmg("promote", "1", "--to", "production", "--reason", "first", "--scenario", "movies")
    assert code == 0 and "movies production: none -> 1" in out
    code, out, _ = pmg("list", "--json", "--scenario", "clothing")
    assert [(row["version"], row["aliases"]) for row in json.loads(out)] == [(1, ["staging", "production"])]
    code, out, _ = pmg("history", "production", "--scenario", "movies")
    assert len(out.splitlines()) == 1 and "first" in out


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("history", "production"),
        ("list", "--scenario", "shoes"),
        ("promote", "1", "--to", "production", "--reason", "x", "--scenario", "clothing/../movies"),
    ],
)
def test_cli_scenario_is_required_and_known(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--params", str(ROOT / "params.yaml"), "registry", *args])
    assert exited.value.code == 2
    assert "--scenario" in capsys.readouterr().err
