"""The registry against damaged or hostile state (issue 16, items 5, 6, 7, 9).

Each test puts the bucket or the local folder in a state a crash, a bug or
an adversary could leave, and checks for one clear `RegistryError` (or a
one-line `pmg: error:` from the CLI) instead of a traceback, a wrong message,
a promoted broken version, a leftover folder or an uploaded system file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pmg.cli import main
from pmg.config import RegistryConfig
from pmg.errors import RegistryError
from pmg.registry import Registry

GOOD = {"lpips_history": 0.40, "lpips_target": 0.50}
PARAMS = {"train_soft": {"num_tokens": 4}}
ROOT = Path(__file__).resolve().parents[2]


def _put(server: Any, cfg: RegistryConfig, key: str, body: bytes) -> None:
    server.client().put_object(Bucket=cfg.bucket, Key=f"{cfg.prefix}/clothing/{key}", Body=body)


def _cli(cfg: RegistryConfig, *args: str) -> list[str]:
    return [
        "--params", str(ROOT / "params.yaml"),
        "--set", f"registry.endpoint_url={cfg.endpoint_url}",
        "--set", f"registry.bucket={cfg.bucket}",
        "--set", f"registry.prefix={cfg.prefix}",
        "registry", *args, "--scenario", "clothing",
    ]  # fmt: skip


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pmg: error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ------------------------------------------------------------ credentials


def test_an_access_key_without_its_secret_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dead_endpoint: str, cfg_for: Any, capsys
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    cfg = cfg_for(dead_endpoint, "pmg-any")
    with pytest.raises(RegistryError, match="incomplete AWS credentials.*AWS_SECRET_ACCESS_KEY"):
        Registry(cfg, scenario="clothing")
    assert main(_cli(cfg, "list")) == 2
    assert "incomplete AWS credentials" in _one_line_error(capsys)


# ------------------------------------------------------------ manifests


def _forged_manifest(registry: Registry, cfg: RegistryConfig, server: Any, files: dict) -> int:
    """Version 2 whose manifest lists `files` (copied from version 1's real entries)."""
    first = registry.manifest(1).model_dump(mode="json")
    entry = next(iter(first["files"].values()))
    forged = {**first, "version": 2, "files": {name: entry for name in files}}
    _put(server, cfg, "versions/2/claim.json", b"{}")
    _put(server, cfg, "versions/2/manifest.json", json.dumps(forged).encode())
    return 2


@pytest.mark.parametrize(
    ("names", "why"),
    [
        (["adapter\x00.safetensors"], "unsafe file name"),
        (["a", "a/b"], "both a file and the folder"),
        (["../x"], "unsafe file name"),
    ],
    ids=["nul-byte", "file-and-folder", "dot-dot"],
)
def test_a_forged_manifest_is_named_invalid_not_missing(
    s3_env: Any, registry_cfg: RegistryConfig, adapter_dir: Path, tmp_path: Path, names: list[str], why: str, capsys
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    registry.push(adapter_dir, GOOD, PARAMS)
    version = _forged_manifest(registry, registry_cfg, s3_env, dict.fromkeys(names))
    with pytest.raises(RegistryError) as err:
        registry.pull(version, tmp_path / "dest")
    message = str(err.value)
    assert "is not a valid manifest" in message and why in message and "does not exist" not in message
    assert "\n" not in message
    assert not (tmp_path / "dest").exists()
    assert [info.version for info in registry.versions()] == [1]
    assert main(_cli(registry_cfg, "promote", str(version), "--to", "staging", "--reason", "x")) == 2
    assert "not a valid manifest" in _one_line_error(capsys)


# ------------------------------------------------------------ aliases


@pytest.mark.parametrize(
    "alias_doc",
    [
        {"alias": "production", "version": 1, "history": [{"action": "promote", "to_version": 1}]},
        {"alias": "production", "history": []},
        {"alias": "production", "version": "one", "history": []},
        [1, 2],
    ],
    ids=["entry-missing-keys", "no-version", "version-not-a-number", "not-an-object"],
)
def test_a_malformed_alias_object_is_one_clear_error(
    s3_env: Any, registry_cfg: RegistryConfig, adapter_dir: Path, alias_doc: Any, capsys
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    registry.push(adapter_dir, GOOD, PARAMS)
    _put(s3_env, registry_cfg, "aliases/production.json", json.dumps(alias_doc).encode())
    for action in (
        lambda: registry.alias_history("production"),
        lambda: registry.rollback("production"),
        registry.versions,
    ):
        with pytest.raises(RegistryError, match="is not a valid alias object"):
            action()
    for args in (["history", "production"], ["rollback", "production"]):
        assert main(_cli(registry_cfg, *args)) == 2
        assert "not a valid alias object" in _one_line_error(capsys)


# ------------------------------------------------------------ promote


def test_promote_refuses_a_version_with_a_damaged_file(
    s3_env: Any, registry_cfg: RegistryConfig, make_adapter: Any, capsys
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    registry.push(make_adapter(1), GOOD, PARAMS)
    registry.push(make_adapter(2), GOOD, PARAMS)  # distinct: an identical adapter is refused
    registry.promote(1, to="staging", reason="first")
    _put(s3_env, registry_cfg, "versions/2/files/adapter_config.json", b"{}")  # another size
    assert [info.version for info in registry.versions()] == [1]
    with pytest.raises(RegistryError, match=r"version 2 .* is damaged: adapter_config\.json has 2 bytes"):
        registry.promote(2, to="staging", reason="second")
    assert registry.resolve("staging") == 1  # the alias did not move
    assert main(_cli(registry_cfg, "promote", "2", "--to", "staging", "--reason", "x", "--force")) == 2
    assert "is damaged" in _one_line_error(capsys)
    # A rollback onto a version whose file vanished is refused the same way.
    registry.promote(1, to="production", reason="a")
    _put(s3_env, registry_cfg, "versions/3/claim.json", b"{}")
    registry.push(make_adapter(3), GOOD, PARAMS)  # version 4 (3 is claimed)
    registry.promote(4, to="staging", reason="b")  # production takes only a version that was staging
    registry.promote(4, to="production", reason="b", force=True)  # no per-pair tables here: gates cannot pass
    s3_env.client().delete_object(
        Bucket=registry_cfg.bucket, Key=f"{registry_cfg.prefix}/clothing/versions/1/files/adapter_config.json"
    )
    with pytest.raises(RegistryError, match="version 1 .* is damaged: adapter_config.json is missing"):
        registry.rollback("production")
    assert registry.resolve("production") == 4


# ------------------------------------------------------------ pull


def test_pull_sweeps_a_killed_pull_and_writes_ordinary_modes(
    s3_env: Any, registry_cfg: RegistryConfig, adapter_dir: Path, tmp_path: Path
) -> None:
    registry = Registry(registry_cfg, scenario="clothing")
    registry.push(adapter_dir, GOOD, PARAMS)
    # What a pull killed with SIGKILL left before (the old name) and now.
    out = tmp_path / "out"
    for name in (".adapter.x1y2z3w4.pull", ".adapter.a1b2c3d4.staging"):
        (out / name / "projection").mkdir(parents=True)
        (out / name / "projection" / "w.safetensors").write_bytes(b"\0" * 1000)
    dest = out / "adapter"
    registry.pull(1, dest)
    assert sorted(p.name for p in out.iterdir()) == ["adapter"]
    umask = os.umask(0)
    os.umask(umask)
    for path in [dest, *dest.rglob("*")]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# ------------------------------------------------------------ push


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_push_refuses_symbolic_links_before_any_request(
    registry_cfg: RegistryConfig, adapter_dir: Path, tmp_path: Path, kind: str
) -> None:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0")
    if kind == "file":
        (adapter_dir / "notes.txt").symlink_to(secret / "passwd")
    else:
        (adapter_dir / "extra").symlink_to(secret, target_is_directory=True)
    registry = Registry(registry_cfg, scenario="clothing")
    with pytest.raises(RegistryError, match="is a symbolic link"):
        registry.push(adapter_dir, GOOD, PARAMS)
    assert registry.bucket.list_keys("", "test") == {}
