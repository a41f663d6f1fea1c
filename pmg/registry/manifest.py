"""What a registry version is: its files, their checksums and its provenance.

A version's `manifest.json` is written last, as the commit marker of a push.
It names the scenario the adapter is for, lists every adapter file with its
sha256 and size, the metrics that justified the version (a flat `name ->
float` dict), the per-pair evaluation table the gates compare (under
`evaluation`), the params and overrides that made it, the git revision and
whether the work tree was dirty, the sha256 of `dvc.lock`, and who pushed it
when.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import math
import os
import re
import socket
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pmg.errors import DataError, RegistryError

MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Frozen(BaseModel):
    # Unknown keys are ignored, not refused: `format` says what a reader
    # must understand, and a newer writer may add informational fields.
    model_config = ConfigDict(frozen=True, extra="ignore")


class FileEntry(_Frozen):
    """One adapter file of a version."""

    sha256: str
    size: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError(f"not a sha256 hex digest: {value!r}")
        return value


def check_relative_path(name: str) -> str:
    """Refuse file names that could escape the destination folder on pull or not be created.

    Control characters (NUL above all: no file system takes it) are refused
    with `..`, absolute paths and backslashes.
    """
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or any(ord(char) < 32 or ord(char) == 127 for char in name)
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise ValueError(f"unsafe file name in a version: {name!r}")
    return name


def check_file_tree(names: Iterable[str]) -> None:
    """Refuse a set of names where one is a file and a folder at once (`a` and `a/b`)."""
    names = set(names)
    for name in sorted(names):
        for parent in PurePosixPath(name).parents:
            if str(parent) in names:
                raise ValueError(f"{str(parent)!r} is both a file and the folder of {name!r}")


class Manifest(_Frozen):
    """The committed description of one immutable version.

    Attributes:
        version: the version number (1, 2, 3, ...), counted per scenario.
        scenario: the scenario the adapter is for (the registry keeps one
            set of versions and aliases per scenario).
        files: relative POSIX path -> checksum and size, for every file.
        metrics: flat metric name -> value the version was measured at.
        params: the parameters (params.yaml sections) that made it.
        git_revision: `git rev-parse HEAD` at push time, or "unknown".
        dvc_lock_sha256: sha256 of `dvc.lock` at push time, if there was one.
        created_at: UTC ISO-8601 time of the push.
        created_by: `user@host` (or `PMG_USER`) of the push.
        claim_token: the token of the claim this push made on the number.
        evaluation: files of the version's evaluation, beside the adapter
            (`pairs.parquet`: the per-pair table the paired gates read);
            empty for versions pushed without one.
        adapter_sha256: sha256 over the adapter's (name, sha256) list: two
            versions with the same value hold byte-identical adapters.
        overrides: the dotted overrides of params.yaml the run was made with.
        git_dirty: whether the work tree had uncommitted changes at push time
            (None: unknown, e.g. outside a git checkout).
        git_dirty_paths: the changed paths (at most 50), to tell a metrics
            refresh from an uncommitted code change.
    """

    format: Literal[1] = MANIFEST_FORMAT
    version: int = Field(ge=1)
    scenario: str
    files: dict[str, FileEntry]
    metrics: dict[str, float]
    params: dict[str, Any]
    git_revision: str
    dvc_lock_sha256: str | None
    created_at: str
    created_by: str
    claim_token: str
    evaluation: dict[str, FileEntry] = Field(default_factory=dict)
    adapter_sha256: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    git_dirty: bool | None = None
    git_dirty_paths: tuple[str, ...] = ()

    @field_validator("evaluation")
    @classmethod
    def _safe_evaluation_names(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in value:
            check_relative_path(name)
        return value

    @field_validator("files")
    @classmethod
    def _safe_names(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if not value:
            raise ValueError("a version has at least one file")
        for name in value:
            check_relative_path(name)
        check_file_tree(value)
        return value

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; raise `ValueError` (one line, what is wrong) if it is not a complete one."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as err:
            problems = [
                f"{'.'.join(str(part) for part in problem['loc']) or 'manifest'}: {problem['msg']}"
                for problem in err.errors()
            ]
            raise ValueError("; ".join(problems)) from None


# ----------------------------------------------------------------- inputs


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_files(adapter_dir: str | Path) -> dict[str, Path]:
    """Every regular file under `adapter_dir`, by relative POSIX path.

    Symbolic links inside the folder are refused, not followed: a push
    uploads what is in the folder, and a link can point anywhere (a link to
    a system file was uploaded before this check). So are other non-regular
    files (FIFOs, sockets, devices).

    Raises:
        RegistryError: the folder does not exist, holds no file, holds a
            symbolic link or a special file, or a file name a version
            cannot hold.
    """
    root = Path(adapter_dir)
    if not root.is_dir():
        raise RegistryError(f"{root}: adapter folder does not exist")
    files: dict[str, Path] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs) + sorted(names):
            path = Path(folder) / name
            if path.is_symlink():
                raise RegistryError(
                    f"{path}: is a symbolic link; the registry uploads only regular files inside the "
                    "adapter folder (copy the file in instead)"
                )
            if name in names:
                if not path.is_file():
                    raise RegistryError(f"{path}: not a regular file; the registry uploads only regular files")
                files[path.relative_to(root).as_posix()] = path
    if not files:
        raise RegistryError(f"{root}: adapter folder holds no files")
    for name in files:
        try:
            check_relative_path(name)
        except ValueError as err:
            raise RegistryError(f"{root}: {err}") from None
    return dict(sorted(files.items()))


def normalise_metrics(raw: Mapping[str, Any], source: str = "metrics") -> dict[str, float]:
    """Flatten a metrics mapping to `name -> float` and check every value.

    Nested mappings (as DVC metrics files often are) are flattened with dots:
    `{"clothing": {"lpips_history": 0.4}}` -> `{"clothing.lpips_history": 0.4}`.

    Raises:
        RegistryError: a value is not a finite number (booleans are refused).
    """
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{source}: metrics must be a JSON object, got {type(raw).__name__}")
    out: dict[str, float] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{name}.")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RegistryError(f"{source}: metric {name!r} is not a number (got {value!r})")
            elif not math.isfinite(value):
                raise RegistryError(f"{source}: metric {name!r} is not finite (got {value!r})")
            else:
                out[name] = float(value)

    walk(raw, "")
    return out


def load_metrics(path: str | Path) -> dict[str, float]:
    """Read a metrics JSON file into a flat `name -> float` dict."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "metrics file does not exist") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err}") from None
    return normalise_metrics(raw, source=str(path))


def normalise_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of `params` (tuples become lists)."""
    try:
        return json.loads(json.dumps(dict(params), sort_keys=True))
    except (TypeError, ValueError) as err:
        raise RegistryError(f"params are not JSON-serialisable: {err}") from None


# ------------------------------------------------------------- provenance


def git_revision(cwd: str | Path | None = None) -> str:
    """`git rev-parse HEAD` in `cwd`, or "unknown" outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and revision else "unknown"


#: Dirty paths kept in a manifest (the count is what matters past that).
MAX_DIRTY_PATHS = 50


def git_dirty(cwd: str | Path | None = None) -> tuple[bool | None, tuple[str, ...]]:
    """Whether the work tree has uncommitted changes, and which paths.

    `git status --porcelain` (tracked changes and untracked files that git
    does not ignore). A run of the pipeline rewrites the tracked `metrics/`
    and `dvc.lock`, so the paths are kept: they tell such a refresh from an
    uncommitted code change.

    Returns:
        `(dirty, paths)`; `(None, ())` outside a git checkout.
    """
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--no-renames"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, ()
    if done.returncode != 0:
        return None, ()
    paths = sorted({line[3:].strip().strip('"') for line in done.stdout.splitlines() if len(line) > 3})
    return bool(paths), tuple(paths[:MAX_DIRTY_PATHS])


def adapter_digest(files: Mapping[str, FileEntry]) -> str:
    """sha256 over the sorted `name sha256` lines of an adapter's files."""
    lines = "".join(f"{name}\t{entry.sha256}\n" for name, entry in sorted(files.items()))
    return sha256_bytes(lines.encode("utf-8"))


def dvc_lock_sha256(path: str | Path = "dvc.lock") -> str | None:
    """sha256 of `dvc.lock`, or None when there is none."""
    path = Path(path)
    return sha256_file(path) if path.is_file() else None


def current_user() -> str:
    """Who acts: `$PMG_USER` if set, else `user@host`."""
    if os.environ.get("PMG_USER"):
        return os.environ["PMG_USER"]
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
