"""The adapter registry: immutable numbered versions and gated aliases on S3.

Adapters are per scenario (a clothing adapter must never become the movies
`production`), so a `Registry` is scoped to one scenario and everything it
does lives under `s3://<bucket>/<prefix>/<scenario>/`::

    versions/<n>/claim.json      written first, If-None-Match: * (claims n)
    versions/<n>/files/<path>    the adapter's files, each If-None-Match: *
    versions/<n>/evaluation/pairs.parquet   its per-pair evaluation (the paired gates' input)
    versions/<n>/manifest.json   written last, If-None-Match: * (commits n)
    aliases/<name>.json          {alias, version, history: [...]}, If-Match

Version numbers, aliases, their histories, gates (against that scenario's
`production`) and rollbacks are therefore all per scenario. Only
`init_registry` (bucket creation, the conditional-write check) is about the
bucket as a whole and takes no scenario.

Why it is safe without locks:

- *Racing pushes.* A push picks the next free number and claims it with a
  conditional create of `claim.json`; S3 (and SeaweedFS, checked by
  `init_registry` and the tests) lets exactly one writer create a key, the
  others get HTTP 412 and try the next number. So two pushes never share a
  number and both complete.
- *Interrupted pushes.* A version is visible (`list`, `pull`, `promote`) only
  once its manifest exists and every file it lists is there with the listed
  size. A push that dies before the manifest leaves a claimed number nobody
  sees; the number is never reused.
- *Immutability.* Every object of a version is created with
  `If-None-Match: *`, so nothing under a version is ever overwritten;
  pushing to an existing number is refused.
- *Aliases.* An alias object is replaced with `If-Match: <etag>` of the copy
  the decision was made on; if someone moved the alias meanwhile the move is
  re-evaluated (gates included) on the new state.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pmg.config import RegistryConfig
from pmg.errors import DataError, RegistryError
from pmg.io import output_folder
from pmg.registry import manifest as mf
from pmg.registry.gates import GateReport, evaluate_gates
from pmg.registry.manifest import Manifest
from pmg.registry.s3 import Bucket

ALIASES = ("staging", "production")
_MAX_CLAIM_TRIES = 100
_MAX_ALIAS_TRIES = 8
_VERSION_REF = re.compile(r"^v?(\d+)$")
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9_-]+")


class PromotionRefused(RegistryError):
    """The candidate failed at least one metric gate (or the promotion order); `.report` says which."""

    def __init__(self, message: str, report: GateReport) -> None:
        super().__init__(message)
        self.report = report


class IdenticalAdapter(RegistryError):
    """The adapter is byte-identical to an existing version; `.version` is that version.

    Pushing it again would make a "new" version that is the same model, and
    a retraining that changed nothing would look like one that did.
    """

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


@dataclass(frozen=True)
class AliasMove:
    """The outcome of a promotion or a rollback.

    Attributes:
        alias: `staging` or `production`.
        from_version: the alias's target before (None if it had none).
        to_version: its target now.
        changed: False when the alias already pointed at `to_version`.
        forced: `--force` was given.
        report: the gate report (promotions only).
    """

    alias: str
    from_version: int | None
    to_version: int
    changed: bool
    forced: bool = False
    report: GateReport | None = None


@dataclass(frozen=True)
class AliasStatus:
    """Where one alias of one scenario points, and its last move.

    Attributes:
        scenario, alias: which alias.
        version: its version (None: it never pointed anywhere).
        at, by, action, forced, reason: its last move (None when it has none).
        metrics: the version's recorded metrics (empty without a version).
    """

    scenario: str
    alias: str
    version: int | None
    at: str | None
    by: str | None
    action: str | None
    forced: bool
    reason: str | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class VersionInfo:
    """A committed version and the aliases that point at it."""

    manifest: Manifest
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def version(self) -> int:
        return self.manifest.version


@dataclass
class _Alias:
    """An alias object as read, with the ETag it was read at."""

    name: str
    version: int | None
    history: list[dict[str, Any]]
    etag: str | None

    def to_json(self) -> bytes:
        doc = {"alias": self.name, "version": self.version, "history": self.history}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _check_alias(name: str) -> str:
    if name not in ALIASES:
        raise RegistryError(f"unknown alias {name!r}: aliases are {', '.join(ALIASES)}")
    return name


def check_scenario(scenario: object) -> str:
    """`scenario` if it is a usable key segment (`[A-Za-z0-9_-]+`), else RegistryError.

    The name becomes a folder of the S3 key, so a slash, a dot segment or an
    empty name could reach into another scenario's versions.
    """
    # fullmatch: `$` would let a trailing newline through.
    if not isinstance(scenario, str) or not _SCENARIO_NAME.fullmatch(scenario):
        raise RegistryError(
            f"invalid registry scenario {scenario!r}: a scenario name is non-empty and made of "
            "letters, digits, '_' and '-' (e.g. clothing, movies, emoji)"
        )
    return scenario


def adapter_scenario(adapter_dir: str | Path) -> str | None:
    """The `scenario` recorded in the folder's `adapter_config.json`, if any.

    Raises:
        RegistryError: the config exists but is not a JSON object.
    """
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RegistryError(
            f"{config}: not valid JSON ({err}); cannot check which scenario it is for"
        ) from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{config}: must be a JSON object; cannot check which scenario it is for")
    found = doc.get("scenario")
    return None if found is None else str(found)


def _entry(data: bytes) -> mf.FileEntry:
    return mf.FileEntry(sha256=mf.sha256_bytes(data), size=len(data))


def _pairs_bytes(path: str | Path) -> bytes:
    """The bytes of a per-pair evaluation table, after checking it against `PairMetrics`.

    Raises:
        DataError: the file is missing, unreadable, or breaks the schema
            (file, row and column named).
    """
    from pmg.io import validate
    from pmg.schemas import PairMetrics

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "per-pair evaluation table does not exist (the evaluate stage writes it)")
    data = path.read_bytes()  # checked and uploaded: the same bytes
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - any parse failure becomes a clear message
        raise DataError(path, f"not a readable Parquet table: {err}") from None
    table = validate(frame, PairMetrics, path)
    if table.empty:
        raise DataError(path, "per-pair evaluation table has no rows: nothing to compare a version on")
    return data


#: What every alias history entry holds (`history` prints them, `rollback` reads them).
_ENTRY_KEYS = ("action", "to_version", "at", "by", "reason")


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _alias_problem(doc: object) -> str | None:
    """Why `doc` is not an alias object this code wrote, or None if it is one."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if "version" not in doc or not (doc["version"] is None or _is_version(doc["version"])):
        return f"'version' must be a version number or null, got {doc.get('version')!r}"
    history = doc.get("history")
    if not isinstance(history, list):
        return "'history' must be a list"
    for position, entry in enumerate(history):
        if not isinstance(entry, dict):
            return f"history entry {position} is not an object"
        missing = [key for key in _ENTRY_KEYS if key not in entry]
        if missing:
            return f"history entry {position} lacks {', '.join(missing)}"
        if not _is_version(entry["to_version"]):
            return f"history entry {position} has to_version {entry['to_version']!r}"
    return None


def _undo_stack(history: list[dict[str, Any]]) -> list[int]:
    """The alias's targets as a stack: promotions push, rollbacks pop."""
    stack: list[int] = []
    for entry in history:
        if entry.get("action") == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(int(entry["to_version"]))
    return stack


def _check_pull_destination(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise RegistryError(f"{dest}: destination exists and is not an empty folder")


def _prefix_root(cfg: RegistryConfig) -> str:
    return f"{cfg.prefix}/" if cfg.prefix else ""


def init_registry(cfg: RegistryConfig, client: Any | None = None) -> dict[str, Any]:
    """Create the bucket if missing and check the server's conditional writes.

    This concerns the bucket, not one scenario, so it is a function and not
    a `Registry` method. The check creates a probe key under
    `<prefix>/_probe/` twice with `If-None-Match: *`; a server that lets the
    second write through would let two racing pushes take the same version
    number, so it is refused here, before any push.

    Args:
        cfg: the `registry` section of params.yaml.
        client: a boto3 S3 client to use instead of building one.

    Returns:
        `{"bucket_created": bool, "conditional_writes": True, "bucket": name,
        "endpoint": url}`.
    """
    bucket = Bucket(cfg, client)
    created = bucket.create()
    probe = f"{_prefix_root(cfg)}_probe/{uuid.uuid4().hex}"
    what = "checking conditional writes (If-None-Match)"
    first = bucket.put_new(probe, b"1", what)
    second = bucket.put_new(probe, b"2", what)
    bucket.delete(probe, "removing the conditional-write probe")
    if not (first and not second):
        raise RegistryError(
            f"{bucket.endpoint} ignores If-None-Match on PutObject (bucket {bucket.name!r}): "
            "racing pushes could take the same version number; use a server that honours "
            "conditional writes (AWS S3, SeaweedFS, MinIO)"
        )
    return {
        "bucket_created": created,
        "conditional_writes": True,
        "bucket": bucket.name,
        "endpoint": bucket.endpoint,
    }


class Registry:
    """Versions and aliases of one scenario's adapters in one S3 bucket + prefix.

    Args:
        cfg: the `registry` section of params.yaml.
        client: a boto3 S3 client to use instead of building one from `cfg`
            and the standard AWS credential chain (tests pass one).
        scenario: the scenario whose adapters this registry holds (required;
            `[A-Za-z0-9_-]+`). Everything lives under `<prefix>/<scenario>/`,
            so two scenarios never share a version number or an alias.

    Raises:
        RegistryError: an invalid scenario name.
    """

    def __init__(self, cfg: RegistryConfig, client: Any | None = None, *, scenario: str) -> None:
        self.scenario = check_scenario(scenario)
        self.cfg = cfg
        self.bucket = Bucket(cfg, client)
        self.root = f"{_prefix_root(cfg)}{scenario}/"

    # ------------------------------------------------------------- keys

    def _version_prefix(self, version: int) -> str:
        return f"{self.root}versions/{version}/"

    def _claim_key(self, version: int) -> str:
        return f"{self._version_prefix(version)}claim.json"

    def _manifest_key(self, version: int) -> str:
        return f"{self._version_prefix(version)}manifest.json"

    def _file_key(self, version: int, name: str) -> str:
        return f"{self._version_prefix(version)}files/{name}"

    def _evaluation_key(self, version: int, name: str) -> str:
        return f"{self._version_prefix(version)}evaluation/{name}"

    def _alias_key(self, alias: str) -> str:
        return f"{self.root}aliases/{alias}.json"

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket.name}/{key or self.root}"

    # ------------------------------------------------------------- push

    def _claimed_numbers(self) -> list[int]:
        folders = self.bucket.list_folders(f"{self.root}versions/", "listing version numbers")
        numbers = []
        for folder in folders:
            tail = folder[len(f"{self.root}versions/") :].rstrip("/")
            if tail.isdigit():
                numbers.append(int(tail))
        return numbers

    def _put_once(self, key: str, data: bytes, what: str, content_type: str | None = None) -> bool:
        """Create `key` with `data` unless it exists; True if it now holds exactly `data`.

        A conditional PUT whose answer was lost is retried by botocore and
        then answered 412 although it was this writer's own object; reading it
        back tells the two cases apart (the claim and the manifest carry this
        push's unique token, so equal bytes mean "mine").
        """
        if self.bucket.put_new(key, data, what, content_type):
            return True
        found = self.bucket.get(key, what)
        return found is not None and found[0] == data

    def _claim(self, token: str, who: str, when: str, version: int | None) -> int:
        """Claim a version number with a conditional create; return it."""
        candidate = version if version is not None else max(self._claimed_numbers(), default=0) + 1
        for _ in range(_MAX_CLAIM_TRIES):
            claim = json.dumps({"version": candidate, "token": token, "by": who, "at": when}).encode()
            key = self._claim_key(candidate)
            if self._put_once(key, claim, f"claiming version {candidate}", "application/json"):
                return candidate
            if version is not None:
                raise RegistryError(
                    f"version {version} already exists in {self.url()} and versions are immutable: "
                    "push without a version number to get the next free one"
                )
            candidate += 1
        raise RegistryError(
            f"could not claim a version number in {self.url()} after {_MAX_CLAIM_TRIES} tries"
        )

    def push(
        self,
        adapter_dir: str | Path,
        metrics: Mapping[str, Any],
        params: Mapping[str, Any],
        *,
        create_bucket: bool = False,
        version: int | None = None,
        git_revision: str | None = None,
        dvc_lock: str | Path | None = "dvc.lock",
        created_by: str | None = None,
        pairs: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        dirty: tuple[bool | None, tuple[str, ...]] | None = None,
    ) -> Manifest:
        """Upload an adapter folder as the next immutable version of this scenario.

        Files go first, the manifest last: the version exists for readers only
        once the manifest does. An adapter whose `adapter_config.json` names
        another scenario is refused: pushing it here would let it become this
        scenario's `production`. So is an adapter byte-identical to an
        existing version (`IdenticalAdapter`): it is not a new model.

        Args:
            adapter_dir: the adapter folder (safetensors files + JSON config).
            metrics: metric name -> value (nested mappings are flattened).
            params: the params that made the adapter (e.g. params.yaml sections).
            create_bucket: create the bucket if it does not exist.
            version: claim exactly this number (refused if it exists);
                None takes the next free one.
            git_revision: recorded revision; None runs `git rev-parse HEAD`.
            dvc_lock: `dvc.lock` to fingerprint (None or a missing file: none).
            created_by: who pushes; None uses `$PMG_USER` or `user@host`.
            pairs: the version's per-pair evaluation table (`PairMetrics`
                parquet, the evaluate stage's `pairs.parquet`), stored with
                it for the paired gates; without it the version cannot be
                promoted past a production version (except with force).
            overrides: the dotted params overrides the run used (recorded).
            dirty: `(dirty, paths)` of the work tree; None runs `git status`.

        Returns:
            The committed manifest (its `version` is the number taken).

        Raises:
            IdenticalAdapter: the adapter is byte-identical to a version.
            DataError: the pairs table is missing or breaks its schema.
            RegistryError: bad inputs (an adapter of another scenario
                included), a missing bucket, any S3 failure.
        """
        # Everything local is checked before the first request.
        files = mf.adapter_files(adapter_dir)
        recorded = adapter_scenario(adapter_dir)
        if recorded is not None and recorded != self.scenario:
            raise RegistryError(
                f"{Path(adapter_dir) / 'adapter_config.json'} is an adapter of scenario {recorded!r}, "
                f"not {self.scenario!r}: push it with scenario {recorded!r} (--scenario {recorded})"
            )
        flat_metrics = mf.normalise_metrics(metrics)
        safe_params = mf.normalise_params(params)
        safe_overrides = mf.normalise_params(overrides or {})
        if version is not None and version < 1:
            raise RegistryError(f"version numbers start at 1, got {version}")
        evaluation = {"pairs.parquet": _pairs_bytes(pairs)} if pairs is not None else {}
        entries = {name: _entry(path.read_bytes()) for name, path in files.items()}
        digest = mf.adapter_digest(entries)
        revision = git_revision if git_revision is not None else mf.git_revision()
        is_dirty, dirty_paths = dirty if dirty is not None else mf.git_dirty()
        lock_sha = mf.dvc_lock_sha256(dvc_lock) if dvc_lock is not None else None
        who = created_by or mf.current_user()
        when = mf.utc_now()

        if create_bucket:
            self.bucket.create()
        else:
            self.bucket.require()
        self._refuse_identical(digest, adapter_dir)

        token = uuid.uuid4().hex
        number = self._claim(token, who, when, version)
        for name, path in files.items():
            # Upload exactly the bytes that were hashed (adapters are small).
            data = path.read_bytes()
            if _entry(data) != entries[name]:
                raise RegistryError(f"{path} changed while it was being pushed; push again")
            key = self._file_key(number, name)
            if not self._put_once(key, data, f"uploading {name} of version {number}"):
                raise RegistryError(f"{self.url(key)} already exists: version {number} was claimed twice")
        evaluated: dict[str, mf.FileEntry] = {}
        for name, data in evaluation.items():
            evaluated[name] = _entry(data)
            key = self._evaluation_key(number, name)
            if not self._put_once(key, data, f"uploading {name} of version {number}"):
                raise RegistryError(f"{self.url(key)} already exists: version {number} was claimed twice")
        manifest = Manifest(
            version=number,
            scenario=self.scenario,
            files=entries,
            metrics=flat_metrics,
            params=safe_params,
            git_revision=revision,
            dvc_lock_sha256=lock_sha,
            created_at=when,
            created_by=who,
            claim_token=token,
            evaluation=evaluated,
            adapter_sha256=digest,
            overrides=safe_overrides,
            git_dirty=is_dirty,
            git_dirty_paths=dirty_paths,
        )
        key = self._manifest_key(number)
        if not self._put_once(key, manifest.to_json(), f"committing version {number}", "application/json"):
            raise RegistryError(f"{self.url(key)} already exists: version {number} was claimed twice")
        return manifest

    def _refuse_identical(self, digest: str, adapter_dir: str | Path) -> None:
        """Raise `IdenticalAdapter` if a committed version holds exactly these adapter files.

        Two pushes of the same files racing each other can both pass this
        check; the versions are then identical but still both valid.
        """
        for info in self.versions():
            known = info.manifest.adapter_sha256 or mf.adapter_digest(info.manifest.files)
            if known == digest:
                raise IdenticalAdapter(
                    f"{adapter_dir} is byte-identical to {self.scenario} version {info.version}: "
                    "not pushed as a new version (retrain, or promote that version)",
                    info.version,
                )

    # ------------------------------------------------------------- read

    def _parse_manifest(self, version: int, data: bytes) -> Manifest | None:
        try:
            manifest = Manifest.from_json(data)
        except ValueError:
            return None
        # A manifest is only this scenario's version `version` if it says so.
        return manifest if (manifest.version, manifest.scenario) == (version, self.scenario) else None

    def manifest(self, version: int) -> Manifest:
        """The committed manifest of `version`.

        Raises:
            RegistryError: no such committed version.
        """
        key = self._manifest_key(version)
        found = self.bucket.get(key, f"reading the manifest of version {version}")
        if found is None:
            raise RegistryError(
                f"version {version} does not exist in {self.url()} (or its push did not complete)"
            )
        try:
            manifest = Manifest.from_json(found[0])
        except ValueError as err:
            raise RegistryError(f"version {version} cannot be used: {self.url(key)} is not a valid manifest ({err})") from None
        if (manifest.version, manifest.scenario) != (version, self.scenario):
            raise RegistryError(
                f"version {version} cannot be used: {self.url(key)} describes version {manifest.version} "
                f"of scenario {manifest.scenario!r}"
            )
        return manifest

    def versions(self) -> list[VersionInfo]:
        """Every complete version, oldest first, with the aliases on it.

        Complete means: the manifest exists, parses, and every file it lists
        is present with the listed size. Claimed numbers of interrupted
        pushes are not listed.
        """
        sizes = self.bucket.list_keys(f"{self.root}versions/", "listing versions")
        pattern = re.compile(rf"^{re.escape(self.root)}versions/(\d+)/manifest\.json$")
        numbers = sorted(int(m.group(1)) for key in sizes if (m := pattern.match(key)))
        on_version: dict[int, list[str]] = {}
        for alias in ALIASES:
            target = self._read_alias(alias).version
            if target is not None:
                on_version.setdefault(target, []).append(alias)
        out = []
        for number in numbers:
            found = self.bucket.get(self._manifest_key(number), f"reading the manifest of version {number}")
            manifest = self._parse_manifest(number, found[0]) if found else None
            if manifest is None:
                continue
            evaluation_present = all(
                sizes.get(self._evaluation_key(number, n)) == e.size for n, e in manifest.evaluation.items()
            )
            if not self._incomplete(manifest, sizes) and evaluation_present:
                out.append(VersionInfo(manifest, tuple(on_version.get(number, ()))))
        return out

    def pairs_table(self, version: int, manifest: Manifest | None = None) -> pd.DataFrame | None:
        """The version's per-pair evaluation table (sha256 verified), or None if it has none.

        Raises:
            RegistryError: the stored table is missing, corrupted or unreadable.
        """
        manifest = manifest or self.manifest(version)
        entry = manifest.evaluation.get("pairs.parquet")
        if entry is None:
            return None
        key = self._evaluation_key(version, "pairs.parquet")
        found = self.bucket.get(key, f"reading the per-pair table of version {version}")
        if found is None or _entry(found[0]) != entry:
            raise RegistryError(
                f"{self.url(key)} is missing or does not match its manifest (sha256 {entry.sha256}): "
                f"version {version}'s per-pair table cannot be trusted"
            )
        try:
            return pd.read_parquet(io.BytesIO(found[0]))
        except Exception as err:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise RegistryError(f"{self.url(key)} is not a readable parquet table: {err}") from None

    def _incomplete(self, manifest: Manifest, sizes: Mapping[str, int]) -> list[str]:
        """What is wrong with a version's files given the listed sizes (empty: complete)."""
        problems = []
        for name, entry in sorted(manifest.files.items()):
            size = sizes.get(self._file_key(manifest.version, name))
            if size is None:
                problems.append(f"{name} is missing")
            elif size != entry.size:
                problems.append(f"{name} has {size} bytes, the manifest says {entry.size}")
        return problems

    def complete_manifest(self, version: int) -> Manifest:
        """The manifest of `version` after checking every file it lists is there with its size.

        What `list` shows; `promote` and `rollback` point aliases only at such
        versions (a version with a missing or resized file would otherwise
        become `production` and then fail every pull).

        Raises:
            RegistryError: no such version, or a file missing or of another size.
        """
        manifest = self.manifest(version)
        sizes = self.bucket.list_keys(f"{self._version_prefix(version)}files/", f"listing version {version}")
        problems = self._incomplete(manifest, sizes)
        if problems:
            raise RegistryError(
                f"version {version} in {self.url()} is damaged: {'; '.join(problems)}; "
                "no alias may point at it (push the adapter again as a new version)"
            )
        return manifest

    def resolve(self, ref: str | int) -> int:
        """A version number from `3`, `"3"`, `"v3"` or an alias name."""
        if isinstance(ref, int):
            return ref
        match = _VERSION_REF.match(ref.strip())
        if match:
            return int(match.group(1))
        _check_alias(ref)
        target = self._read_alias(ref).version
        if target is None:
            raise RegistryError(f"alias {ref!r} points at no version yet in {self.url()}")
        return target

    def pull(self, ref: str | int, dest: str | Path) -> Manifest:
        """Download a version (or an alias's version) into `dest`, verified.

        Files land in a temporary folder beside `dest`; every sha256 and size
        is checked against the manifest; only then is the folder renamed to
        `dest`. On any failure nothing is left at `dest`.

        Args:
            ref: a version number, `vN`, or `staging`/`production`.
            dest: a folder that does not exist yet, or is empty.

        Raises:
            RegistryError: unknown ref, a corrupted or missing object, any S3
                failure, or a non-empty `dest`.
        """
        dest = Path(dest)
        _check_pull_destination(dest)
        version = self.resolve(ref)
        manifest = self.manifest(version)
        # The lock keeps two pulls into one folder apart, and sweeps what a
        # killed pull left there; the folder gets the umask's modes.
        with output_folder(dest) as tmp:
            _check_pull_destination(dest)  # again, now that no other pull can fill it
            for name, entry in sorted(manifest.files.items()):
                key = self._file_key(version, name)
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                size = 0
                with open(target, "wb") as handle:
                    for chunk in self.bucket.stream(key, f"downloading {name} of version {version}"):
                        digest.update(chunk)
                        size += len(chunk)
                        handle.write(chunk)
                if size != entry.size or digest.hexdigest() != entry.sha256:
                    raise RegistryError(
                        f"version {version} is corrupted: {self.url(key)} has sha256 {digest.hexdigest()} "
                        f"({size} bytes) but the manifest says {entry.sha256} ({entry.size} bytes); "
                        f"nothing was written to {dest}"
                    )
        return manifest

    # ------------------------------------------------------------- aliases

    def _read_alias(self, alias: str) -> _Alias:
        found = self.bucket.get(self._alias_key(alias), f"reading alias {alias!r}")
        if found is None:
            return _Alias(alias, None, [], None)
        data, etag = found
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        problem = _alias_problem(doc)
        if problem:
            raise RegistryError(f"{self.url(self._alias_key(alias))} is not a valid alias object: {problem}")
        return _Alias(alias, doc["version"], list(doc["history"]), etag)

    def _move_alias(self, alias: _Alias, entry: dict[str, Any]) -> bool:
        """Append `entry` and write `alias` if nobody changed it since it was read.

        Returns:
            False if the alias changed meanwhile (re-read and decide again).
        """
        entry = {**entry, "id": uuid.uuid4().hex, "at": mf.utc_now()}
        alias.history.append(entry)
        alias.version = entry["to_version"]
        key = self._alias_key(alias.name)
        what = f"moving alias {alias.name!r}"
        if alias.etag is None:
            written = self.bucket.put_new(key, alias.to_json(), what, "application/json")
        else:
            written = self.bucket.put_if_match(key, alias.to_json(), alias.etag, what)
        if written:
            return True
        # A retried write whose first answer was lost fails its own condition:
        # the entry's id tells whether the alias already holds this move.
        return any(old.get("id") == entry["id"] for old in self._read_alias(alias.name).history)

    def alias_history(self, alias: str) -> list[dict[str, Any]]:
        """Every move of `alias`, oldest first."""
        return self._read_alias(_check_alias(alias)).history

    def status(self) -> list[AliasStatus]:
        """Where each alias of this scenario points now, with its last move and the version's metrics."""
        rows = []
        for alias in ALIASES:
            current = self._read_alias(alias)
            last = current.history[-1] if current.history else {}
            metrics = self.manifest(current.version).metrics if current.version is not None else {}
            rows.append(
                AliasStatus(
                    scenario=self.scenario,
                    alias=alias,
                    version=current.version,
                    at=last.get("at"),
                    by=last.get("by"),
                    action=last.get("action"),
                    forced=bool(last.get("forced")),
                    reason=last.get("reason"),
                    metrics=metrics,
                )
            )
        return rows

    def check_writable(self) -> dict[str, Any]:
        """Check now, before hours of training, that this process can push a version here.

        Creates and deletes a probe object under `<prefix>/<scenario>/_preflight/`
        with the same conditional write a push makes, so missing or rejected
        credentials, an unreachable endpoint, a missing bucket or a read-only
        key fail at the start of a run with the registry's own one-line
        message, not after the training.

        Returns:
            `{"endpoint", "bucket", "scenario", "versions"}` (committed versions now).

        Raises:
            RegistryError: the registry cannot be written.
        """
        self.bucket.require()
        probe = f"{self.root}_preflight/{uuid.uuid4().hex}"
        if not self.bucket.put_new(probe, b"preflight", "writing a preflight probe"):
            raise RegistryError(f"{self.url(probe)} already existed: the preflight probe could not be created")
        self.bucket.delete(probe, "removing the preflight probe")
        return {
            "endpoint": self.bucket.endpoint,
            "bucket": self.bucket.name,
            "scenario": self.scenario,
            "versions": len(self._claimed_numbers()),
        }

    def check_gates(self, version: int) -> GateReport:
        """The gate report of `version` against this scenario's current production.

        Against a production version the gates compare both versions'
        per-pair tables (paired); with none, the candidate's metrics meet
        the thresholds. Promoting the production version itself compares it
        with itself (every regression is 0).
        """
        candidate = self.manifest(version)
        production = self._read_alias("production").version
        if production is None:
            return evaluate_gates(
                self.cfg.gates, candidate.metrics, candidate_version=version, production_version=None
            )
        return evaluate_gates(
            self.cfg.gates,
            candidate.metrics,
            candidate_version=version,
            production_version=production,
            candidate_pairs=self.pairs_table(version, candidate),
            production_pairs=self.pairs_table(production),
            paired=self.cfg.paired,
        )

    def order_violation(self, version: int, to: str) -> str | None:
        """Why `to` may not take `version` under `cfg.promotion_order`, or None if it may.

        An alias takes only versions that the alias before it in the order
        has pointed at (at any time: a promotion or a rollback put it there).
        """
        order = list(self.cfg.promotion_order)
        if to not in order or order.index(to) == 0:
            return None
        before = order[order.index(to) - 1]
        if any(entry.get("to_version") == version for entry in self._read_alias(before).history):
            return None
        return (
            f"{self.scenario} version {version} has never been {before!r}, and {to!r} only takes versions "
            f"that have been {before!r} (registry.promotion_order {order}): promote it to {before} first"
        )

    def promote(
        self, version: int, to: str, reason: str, *, force: bool = False, by: str | None = None
    ) -> AliasMove:
        """Point `to` at `version` if the version passes the metric gates.

        Gates compare the candidate with this scenario's current `production`
        version and are enforced for the aliases in `cfg.gated_aliases`. `force` moves
        the alias anyway and is recorded as forced in the alias history.

        Raises:
            PromotionRefused: a gate failed (each failed gate, both values).
            RegistryError: unknown version or alias, any S3 failure.
        """
        _check_alias(to)
        if not reason.strip():
            raise RegistryError("a promotion needs a reason (--reason)")
        who = by or mf.current_user()
        for _ in range(_MAX_ALIAS_TRIES):
            current = self._read_alias(to)
            self.complete_manifest(version)
            report = self.check_gates(version)
            out_of_order = self.order_violation(version, to)
            if out_of_order is not None and not force:
                raise PromotionRefused(
                    f"promotion of {self.scenario} version {version} to {to} refused: {out_of_order} "
                    "(--force overrides; it is recorded in the alias history)",
                    report,
                )
            if to in self.cfg.gated_aliases and not report.passed and not force:
                failed = report.failed
                baseline = (
                    f"production (version {report.baseline_version})"
                    if report.baseline_version is not None
                    else "the configured thresholds"
                )
                raise PromotionRefused(
                    f"promotion of {self.scenario} version {version} to {to} refused: {len(failed)} of "
                    f"{len(report.results)} gates failed against {baseline}:\n"
                    f"{report.describe(only_failed=True)}\n"
                    "(--force overrides; it is recorded in the alias history)",
                    report,
                )
            if current.version == version:
                return AliasMove(to, version, version, changed=False, forced=force, report=report)
            previous = current.version
            entry = {
                "action": "promote",
                "from_version": previous,
                "to_version": version,
                "by": who,
                "reason": reason,
                "forced": force,
                "gates": report.to_dict(),
                "out_of_order": out_of_order,
            }
            if self._move_alias(current, entry):
                return AliasMove(to, previous, version, changed=True, forced=force, report=report)
        raise RegistryError(f"alias {to!r} kept changing under this promotion; try again")

    def rollback(self, alias: str, reason: str = "rollback", *, by: str | None = None) -> AliasMove:
        """Point `alias` back at the target it had before its current one.

        Promotions and rollbacks form an undo stack: promote 1, promote 2,
        promote 3, rollback -> 2, rollback -> 1.

        Raises:
            RegistryError: the alias has no previous target, any S3 failure.
        """
        _check_alias(alias)
        who = by or mf.current_user()
        for _ in range(_MAX_ALIAS_TRIES):
            current = self._read_alias(alias)
            stack = _undo_stack(current.history)
            if len(stack) < 2:
                raise RegistryError(
                    f"alias {alias!r} of scenario {self.scenario!r} has no previous version to roll back to "
                    f"(now: {current.version if current.version is not None else 'none'})"
                )
            target = stack[-2]
            self.complete_manifest(target)  # immutable, but say so clearly if its files were damaged
            previous = current.version
            entry = {
                "action": "rollback",
                "from_version": previous,
                "to_version": target,
                "by": who,
                "reason": reason,
                "forced": False,
                "gates": None,
            }
            if self._move_alias(current, entry):
                return AliasMove(alias, previous, target, changed=True)
        raise RegistryError(f"alias {alias!r} kept changing under this rollback; try again")


def promotion_path(cfg: RegistryConfig, alias: str) -> list[str]:
    """The aliases a new version is moved through to reach `alias`: the promotion order up to it.

    With the default order `[staging, production]` a retrained version goes
    to `staging` (not gated by default) and then to `production` (gated).
    """
    _check_alias(alias)
    order = list(cfg.promotion_order)
    return order[: order.index(alias) + 1] if alias in order else [alias]


@dataclass(frozen=True)
class Registration:
    """What `register_and_maybe_promote` did.

    Attributes:
        version: the version pushed.
        promoted: whether `alias` now points at it.
        report: the gate report of the last promotion tried.
        moves: the alias moves made, in order (e.g. staging, then production).
        refused: the refusal message when a promotion was refused.
    """

    version: int
    promoted: bool
    report: GateReport
    moves: tuple[AliasMove, ...] = ()
    refused: str | None = None


def register_and_maybe_promote(
    cfg: RegistryConfig,
    adapter_dir: str | Path,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    reason: str,
    *,
    scenario: str,
    client: Any | None = None,
    alias: str = "production",
    create_bucket: bool = False,
    pairs: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Registration:
    """Push an adapter as a new version of `scenario` and promote it along the order if the gates pass.

    What the retraining flow calls after evaluation. The version number and
    the gates (against the current production) are those of `scenario`. The
    version is promoted to each alias of `promotion_path(cfg, alias)` in turn
    and stops at the first refusal.

    Raises:
        IdenticalAdapter: the adapter is byte-identical to an existing version.
        RegistryError: any S3 failure, bad inputs.
    """
    registry = Registry(cfg, client, scenario=scenario)
    manifest = registry.push(
        adapter_dir, metrics, params, create_bucket=create_bucket, pairs=pairs, overrides=overrides
    )
    moves: list[AliasMove] = []
    report: GateReport | None = None
    for step in promotion_path(cfg, alias):
        try:
            move = registry.promote(manifest.version, to=step, reason=reason)
        except PromotionRefused as refused:
            return Registration(manifest.version, False, refused.report, tuple(moves), str(refused))
        moves.append(move)
        report = move.report
    assert report is not None
    return Registration(manifest.version, True, report, tuple(moves))
