"""Fetching a profile's real checkpoints into local folders: pinned commits, every file verified.

`pmg models fetch --profile full` downloads, for every model spec of the
profile that names a `hub` repository and a `revision`, the files the loaders
need into the spec's `path`:

* **Pinned.** `revision` is a commit hash: the files of a commit never
  change, and the commit's tree holds each large file's LFS pointer with its
  sha256, so the commit pins every byte. The hub's answer for the commit
  (`model_info(..., files_metadata=True)`) gives each file's size and
  sha256 (LFS files) or git blob id (small files); every downloaded file is
  checked against them, and against the sha256 published for the file where
  :data:`FETCH_RULES` records one (an independent check: a hub serving other
  bytes under the same commit fails it).
* **Safetensors only.** Only the files a rule names are fetched, never a
  pickled weight file (`.bin`, `.ckpt`, `.pt`): Llama-2 and BLIP-2 ship
  safetensors shards, SD 1.5 its fp16 safetensors (renamed to the plain names
  diffusers loads, so the loader needs no `variant`), and the open_clip
  ViT-B-32 checkpoint its `open_clip_model.safetensors` (the pickled
  `open_clip_pytorch_model.bin` beside it is not fetched).
* **Resumable, atomic.** Files go into `.<name>.partial/` beside the final
  folder (a killed fetch resumes there: files already verified are kept);
  once all are verified, `pmg_fetch.json` (repository, commit, endpoint,
  every file's size and sha256) is written and the folder is renamed into
  place. A folder whose `pmg_fetch.json` names the same repository and
  commit, with every file of the right size, is up to date and left alone.
* **One clear line when the hub is not reachable**: offline mode
  (`HF_HUB_OFFLINE=1`, which the Makefile sets for everything else), no
  network, a gated repository without a token, a commit that does not exist.

The endpoint is huggingface_hub's (`HF_ENDPOINT`, default
https://huggingface.co); a token comes from `HF_TOKEN` or `hf auth login`
(Llama-2 is gated: accept its licence on the hub first).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmg.config import ModelSpec, ProfileConfig
from pmg.errors import ModelError
from pmg.io import replace_folder, write_json_atomic

LOCK_FILE = "pmg_fetch.json"
ROLES = ("llm", "captioner", "generator", "scorer")


@dataclass(frozen=True)
class FetchRule:
    """Which files of a hub repository a loader needs, and what is known of them.

    Attributes:
        files: fnmatch patterns of the hub file names to fetch.
        required: local file names that must be among them (else the commit
            does not hold what the loader needs, e.g. no safetensors).
        rename: (hub suffix, local suffix) pairs applied to file names.
        sha256: commit -> {hub file name: sha256} published for that commit.
        gated: the repository needs an accepted licence and a token.
    """

    files: tuple[str, ...]
    required: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    sha256: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    gated: bool = False

    def local_name(self, hub_name: str) -> str:
        """The name a hub file gets in the local folder."""
        for old, new in self.rename:
            if hub_name.endswith(old):
                return hub_name[: -len(old)] + new
        return hub_name

    def wanted(self, hub_name: str) -> bool:
        """Whether a hub file is fetched."""
        return any(fnmatch.fnmatchcase(hub_name, pattern) for pattern in self.files)


#: Repositories of the `full` profile. The sha256 values were published for
#: these commits (the hub's LFS pointers, as recorded in public HF caches);
#: the rest are checked against the hub's own metadata for the commit.
FETCH_RULES: dict[str, FetchRule] = {
    "meta-llama/Llama-2-7b-chat-hf": FetchRule(
        files=(
            "config.json",
            "generation_config.json",
            "model-*-of-*.safetensors",
            "model.safetensors.index.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json",
        ),
        required=("config.json", "model.safetensors.index.json", "tokenizer_config.json"),
        gated=True,
    ),
    "Salesforce/blip2-opt-2.7b": FetchRule(
        files=(
            "config.json",
            "generation_config.json",
            "model-*-of-*.safetensors",
            "model.safetensors.index.json",
            "preprocessor_config.json",
            "processor_config.json",
            "special_tokens_map.json",
            "added_tokens.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
            "merges.txt",
        ),
        required=("config.json", "model.safetensors.index.json", "preprocessor_config.json"),
        sha256={
            "59a1ef6c1e5117b3f65523d1c6066825bcf315e3": {
                "model-00001-of-00002.safetensors": "b81228c9ac1b3dee1731ee71d51fe3b2c34f915019c44c25a793b51300ae24fc",
                "model-00002-of-00002.safetensors": "536bd73b8f1de7d94f503b23fea2eaa4f7f3ea5f74f8f874fcb21d6df1555a19",
            }
        },
    ),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": FetchRule(
        files=(
            "model_index.json",
            "feature_extractor/preprocessor_config.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ),
        required=(
            "model_index.json",
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ),
        rename=((".fp16.safetensors", ".safetensors"),),
        sha256={
            "451f4fe16113bff5a5d2269ed5ad43b0592e9a14": {
                "unet/diffusion_pytorch_model.fp16.safetensors": (
                    "c83908253f9a64d08c25fc90874c9c8aef9a329ce1ca5fb909d73b0c83d1ea21"
                ),
                "text_encoder/model.fp16.safetensors": (
                    "77795e2023adcf39bc29a884661950380bd093cf0750a966d473d1718dc9ef4e"
                ),
                "vae/diffusion_pytorch_model.fp16.safetensors": (
                    "4fbcf0ebe55a0984f5a5e00d8c4521d52359af7229bb4d81890039d2aa16dd7c"
                ),
            }
        },
    ),
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": FetchRule(
        files=("open_clip_config.json", "open_clip_model.safetensors"),
        required=("open_clip_config.json", "open_clip_model.safetensors"),
        sha256={
            "1a25a446712ba5ee05982a381eed697ef9b435cf": {
                "open_clip_model.safetensors": "ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
            }
        },
    ),
}

#: Any other repository: its configs, tokenizers and safetensors (never pickles).
DEFAULT_RULE = FetchRule(files=("*.json", "*.safetensors", "*.txt", "tokenizer.model"))

_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".msgpack", ".h5")


@dataclass(frozen=True)
class HubFile:
    """One file of a commit, as the hub describes it.

    Attributes:
        name: the path in the repository.
        size: bytes.
        sha256: the LFS sha256 (large files), else None.
        blob_id: the git blob id (sha1 of `blob <size>\\0<content>`).
    """

    name: str
    size: int
    sha256: str | None
    blob_id: str | None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content (what the hub reports for small files)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's own hash
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub():
    import huggingface_hub
    from huggingface_hub import constants

    return huggingface_hub, constants


def _hub_error(err: Exception, repo: str, revision: str, endpoint: str, key: str) -> ModelError:
    """One line for a failed hub request: what failed and what to do."""
    from huggingface_hub import errors

    where = f"{key}: {repo}@{revision[:12]} at {endpoint}"
    if isinstance(err, errors.GatedRepoError) or (
        isinstance(err, errors.HfHubHTTPError)
        and getattr(err.response, "status_code", None) in (401, 403)
    ):
        return ModelError(
            f"{where}: access refused; the repository is gated: accept its licence at {endpoint}/{repo} "
            f"and set HF_TOKEN (or run `hf auth login`)"
        )
    if isinstance(err, errors.RevisionNotFoundError):
        return ModelError(f"{where}: the hub has no commit {revision} in {repo}")
    if isinstance(err, errors.RepositoryNotFoundError):
        return ModelError(f"{where}: no such repository (or it is private and no token was given)")
    reason = " ".join(str(err).split())[:300]
    if type(err).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError"):
        return ModelError(f"{where}: the hub is not reachable ({type(err).__name__}: {reason})")
    return ModelError(f"{where}: hub request failed: {type(err).__name__}: {reason}")


def hub_files(repo: str, revision: str, *, endpoint: str, key: str, timeout: float = 30.0) -> list[HubFile]:
    """The files of a commit with their sizes and hashes, as the hub reports them.

    Raises:
        ModelError: offline mode, no network, a gated repository without
            access, an unknown repository or commit, or an answer for another commit.
    """
    huggingface_hub, constants = _hub()
    if constants.is_offline_mode():
        parts = key.split(".")
        profile = parts[1] if len(parts) > 2 and parts[0] == "profiles" else "<profile>"
        raise ModelError(
            f"{key}: {repo}@{revision[:12]} not fetched: HF_HUB_OFFLINE is set (the Makefile sets it so nothing "
            f"else reaches for a hub); run `HF_HUB_OFFLINE=0 pmg models fetch --profile {profile}`"
        )
    try:
        info = huggingface_hub.HfApi(endpoint=endpoint).model_info(
            repo, revision=revision, files_metadata=True, timeout=timeout
        )
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one line
        raise _hub_error(err, repo, revision, endpoint, key) from err
    if info.sha != revision:
        raise ModelError(f"{key}: asked {endpoint} for {repo}@{revision}, it answered for commit {info.sha}")
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        files.append(
            HubFile(
                name=sibling.rfilename,
                size=int(lfs.size if lfs is not None else (sibling.size or 0)),
                sha256=lfs.sha256 if lfs is not None else None,
                blob_id=sibling.blob_id,
            )
        )
    return files


def _verify(path: Path, expected: HubFile, pinned: str | None, where: str) -> str:
    """Check one downloaded file against the hub's metadata (and the pinned sha256); return its sha256."""
    size = path.stat().st_size
    if size != expected.size:
        raise ModelError(f"{where}: {expected.name} has {size} bytes, the commit says {expected.size}")
    digest = sha256_of(path)
    if expected.sha256 is not None and digest != expected.sha256:
        raise ModelError(f"{where}: {expected.name} sha256 {digest} != {expected.sha256} (the commit's LFS pointer)")
    if expected.sha256 is None and expected.blob_id and git_blob_id(path) != expected.blob_id:
        raise ModelError(f"{where}: {expected.name} does not match the commit's git blob {expected.blob_id}")
    if pinned is not None and digest != pinned:
        raise ModelError(f"{where}: {expected.name} sha256 {digest} != the pinned {pinned}")
    return digest


def up_to_date(spec: ModelSpec) -> bool:
    """Whether `spec.path` holds a finished fetch of `spec.hub`@`spec.revision` (sizes checked, not hashes)."""
    folder = Path(spec.path or "")
    lock = folder / LOCK_FILE
    if not lock.is_file():
        return False
    try:
        record = json.loads(lock.read_text(encoding="utf-8"))
    except ValueError:
        return False
    if record.get("repo") != spec.hub or record.get("revision") != spec.revision:
        return False
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == facts["size"]
        for name, facts in record.get("files", {}).items()
    )


def fetch_spec(
    spec: ModelSpec,
    *,
    key: str,
    endpoint: str | None = None,
    force: bool = False,
    say: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Fetch one spec's checkpoint into `spec.path` (see the module docstring).

    Args:
        spec: a spec with `hub`, `revision` and a local `path`.
        key: its config key, for messages.
        endpoint: the hub (default: huggingface_hub's, `HF_ENDPOINT`).
        force: fetch even when the folder is up to date.
        say: progress lines.

    Returns:
        The lock record (`repo`, `revision`, `endpoint`, `files`), with
        `"skipped": True` when the folder was already up to date.

    Raises:
        ModelError: the hub is not reachable, the commit lacks a required
            file, or a file does not verify (nothing is moved into place).
    """
    huggingface_hub, constants = _hub()
    if not spec.hub or not spec.revision or not spec.path:
        raise ModelError(f"{key}: needs hub, revision and path to be fetched")
    final = Path(spec.path)
    if not force and up_to_date(spec):
        say(f"{key}: {spec.hub}@{spec.revision[:12]} already in {final}")
        return {**json.loads((final / LOCK_FILE).read_text(encoding="utf-8")), "skipped": True}
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    rule = FETCH_RULES.get(spec.hub, DEFAULT_RULE)
    where = f"{key}: {spec.hub}@{spec.revision[:12]}"
    listing = hub_files(spec.hub, spec.revision, endpoint=endpoint, key=key)
    chosen = [f for f in listing if rule.wanted(f.name) and not f.name.endswith(_PICKLE_SUFFIXES)]
    missing = sorted(set(rule.required) - {rule.local_name(f.name) for f in chosen})
    if missing:
        raise ModelError(f"{where}: the commit has no {missing} (safetensors weights and configs are required)")
    pinned = rule.sha256.get(spec.revision, {})
    partial = final.parent / f".{final.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"repo": spec.hub, "revision": spec.revision, "endpoint": endpoint, "files": {}}
    total = sum(f.size for f in chosen)
    say(f"{where}: {len(chosen)} files, {total / 1e9:.2f} GB -> {final}")
    for hub_file in chosen:
        local = partial / rule.local_name(hub_file.name)
        started = time.perf_counter()
        if not (local.is_file() and local.stat().st_size == hub_file.size):
            try:
                downloaded = huggingface_hub.hf_hub_download(
                    spec.hub, hub_file.name, revision=spec.revision, local_dir=partial, endpoint=endpoint
                )
            except Exception as err:  # noqa: BLE001 - every hub failure becomes one line
                raise _hub_error(err, spec.hub, spec.revision, endpoint, key) from err
            Path(downloaded).replace(local)
        try:
            digest = _verify(local, hub_file, pinned.get(hub_file.name), where)
        except ModelError:
            local.unlink(missing_ok=True)  # a bad file is fetched again next time
            raise
        record["files"][local.relative_to(partial).as_posix()] = {
            "hub_name": hub_file.name,
            "size": hub_file.size,
            "sha256": digest,
            "pinned": hub_file.name in pinned,
        }
        say(f"  {hub_file.name}: {hub_file.size / 1e6:.1f} MB, sha256 {digest[:12]} ({time.perf_counter() - started:.1f} s)")
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata
    write_json_atomic(partial / LOCK_FILE, record)
    replace_folder(partial, final)
    return record


def fetch_profile(
    profile: ProfileConfig,
    name: str,
    *,
    roles: tuple[str, ...] | None = None,
    endpoint: str | None = None,
    force: bool = False,
    say: Callable[[str], object] = print,
) -> dict[str, dict]:
    """Fetch every model of a profile that names a `hub` (see :func:`fetch_spec`).

    Args:
        profile: the profile.
        name: its name (`full`), for the config keys in messages.
        roles: only these roles (default: every role with a `hub`).
        endpoint: the hub (default: huggingface_hub's).
        force: fetch even what is up to date.
        say: progress lines.

    Returns:
        role -> lock record.

    Raises:
        ModelError: the profile has nothing to fetch, or a fetch failed.
    """
    wanted = [r for r in ROLES if (roles is None or r in roles) and getattr(profile, r).hub]
    if not wanted:
        raise ModelError(f"profiles.{name}: no model names a hub repository to fetch (set hub and revision)")
    return {
        role: fetch_spec(getattr(profile, role), key=f"profiles.{name}.{role}", endpoint=endpoint, force=force, say=say)
        for role in wanted
    }
