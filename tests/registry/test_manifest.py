"""Manifest inputs, without a server: metrics flattening, safe names, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmg.errors import DataError, RegistryError
from pmg.registry.manifest import (
    Manifest,
    adapter_files,
    check_relative_path,
    dvc_lock_sha256,
    git_revision,
    load_metrics,
    normalise_metrics,
)


def test_metrics_are_flattened_and_checked(tmp_path: Path) -> None:
    assert normalise_metrics({"a": 1, "b": {"c": 0.5, "d": {"e": 2}}}) == {"a": 1.0, "b.c": 0.5, "b.d.e": 2.0}
    with pytest.raises(RegistryError, match="metric 'ok' is not a number"):
        normalise_metrics({"ok": True})
    with pytest.raises(RegistryError, match="metric 'x' is not finite"):
        normalise_metrics({"x": float("inf")})
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"lpips": {"history": 0.4}}))
    assert load_metrics(path) == {"lpips.history": 0.4}
    path.write_text("{not json")
    with pytest.raises(DataError, match="m.json: not valid JSON"):
        load_metrics(path)
    path.write_text("[1, 2]")
    with pytest.raises(RegistryError, match="must be a JSON object"):
        load_metrics(path)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a//b", "a/./b", "a\\b", ""])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe file name"):
        check_relative_path(name)


def test_manifest_with_unsafe_or_no_files_is_not_complete() -> None:
    good = {
        "version": 1,
        "scenario": "clothing",
        "files": {"a.safetensors": {"sha256": "0" * 64, "size": 3}},
        "metrics": {},
        "params": {},
        "git_revision": "unknown",
        "dvc_lock_sha256": None,
        "created_at": "2024-01-01T00:00:00Z",
        "created_by": "me",
        "claim_token": "t",
    }
    assert Manifest.from_json(json.dumps(good).encode()).version == 1
    for files in ({}, {"../a": {"sha256": "0" * 64, "size": 3}}, {"a": {"sha256": "xyz", "size": 3}}):
        with pytest.raises(ValueError):
            Manifest.from_json(json.dumps({**good, "files": files}).encode())
    for required in ("claim_token", "scenario"):
        with pytest.raises(ValueError):
            Manifest.from_json(json.dumps({k: v for k, v in good.items() if k != required}).encode())


def test_adapter_folder_and_provenance(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        adapter_files(tmp_path / "missing")
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "w.safetensors").write_bytes(b"x")
    (tmp_path / "a" / "config.json").write_text("{}")
    assert list(adapter_files(tmp_path / "a")) == ["config.json", "sub/w.safetensors"]
    assert git_revision(tmp_path) == "unknown"  # not a git checkout
    assert dvc_lock_sha256(tmp_path / "dvc.lock") is None
