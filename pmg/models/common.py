"""Helpers every loader shares: where a spec points, and turning failures into `ModelError`.

A spec's `path` is either a local file/folder or a hub id. Locally present
paths load with `local_files_only=True`, so no loader ever reaches for the
network when the weights are on disk. A path that does not exist and does not
look like a hub id is an error before any library is called; one that looks
like a hub id is handed to the library and, offline, fails there — either
way the message names the config key and the value.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pmg.config import ModelSpec
from pmg.errors import ModelError, PMGError
from pmg.models.device import resolve_device

# `org/name` or `name`, as the Hugging Face hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """Where a spec's `path` points.

    Attributes:
        value: the path or hub id, as a string.
        local: True when it exists on disk.
    """

    value: str
    local: bool


def require(spec: ModelSpec, field: str, key: str) -> str:
    """Return `spec.<field>`, or fail naming `<key>.<field>` when it is empty."""
    value = getattr(spec, field)
    if not value:
        raise ModelError(f"{key}.{field}: required for kind {spec.kind!r} but not set")
    return str(value)


def resolve_source(spec: ModelSpec, key: str, *, allow_hub: bool = True) -> Source:
    """Decide whether `spec.path` is on disk or a hub id.

    A spec with `hub` names a local folder fetched from that hub repository:
    it is never tried as a hub id, and a missing one names the command that
    fetches it.

    Raises:
        ModelError: `path` is unset, or neither exists nor looks like a hub id.
    """
    value = require(spec, "path", key)
    path = Path(value).expanduser()
    if path.exists():
        return Source(str(path), local=True)
    if spec.hub:
        raise ModelError(missing_fetched_folder(spec, key))
    looks_local = value.startswith((".", "/", "~")) or value.count("/") > 1 or bool(Path(value).suffix)
    if not allow_hub or looks_local or not _HUB_ID.match(value):
        raise ModelError(f"{key}.path = {value!r}: no such file or folder (resolved to {path.resolve()})")
    return Source(value, local=False)


def missing_fetched_folder(spec: ModelSpec, key: str) -> str:
    """The one-line message for a fetched checkpoint's folder that is not there: key, folder, command."""
    parts = key.split(".")
    profile = parts[1] if len(parts) > 2 and parts[0] == "profiles" else "<profile>"
    return (
        f"{key}.path = {spec.path!r}: no such folder (resolved to {Path(spec.path).expanduser().resolve()}); "
        f"it holds {spec.hub}@{(spec.revision or '')[:12]}: fetch it with "
        f"`HF_HUB_OFFLINE=0 pmg models fetch --profile {profile}`"
    )


def require_architecture(config, expected: str, key: str, source: str) -> None:
    """Fail, naming both, when a transformers config's `architectures` does not hold `expected`.

    Args:
        config: a `PretrainedConfig` (its `architectures` list, as written by
            `save_pretrained`).
        expected: the class the spec's `architecture` names.
        key: the spec's config key.
        source: the path or hub id, for the message.
    """
    found = list(getattr(config, "architectures", None) or [])
    if expected not in found:
        held = ", ".join(found) or f"a {getattr(config, 'model_type', '?')!r} model with no architectures entry"
        raise ModelError(
            f"{key}.path = {source!r}: holds {held} (config.json), but {key}.architecture is {expected!r}"
        )


def as_device(device: str | torch.device, key: str) -> torch.device:
    """Accept a resolved `torch.device` or a profile's device string."""
    return device if isinstance(device, torch.device) else resolve_device(device, key=key)


@contextlib.contextmanager
def loading(key: str, source: str, what: str, *, hub: bool = False) -> Iterator[None]:
    """Turn any failure inside the block into a `ModelError` naming key and path.

    Args:
        key: the spec's config key, e.g. `profiles.mini.llm`.
        source: the path or hub id being loaded.
        what: what was expected there, e.g. "a Hugging Face causal LM".
        hub: the source is a hub id rather than a local path (the message
            then says that the hub may be unreachable).
    """
    try:
        yield
    except PMGError:
        raise
    except Exception as err:
        where = f"{key}.path = {source!r}"
        hint = " (not a local path; tried it as a hub id — is the hub reachable?)" if hub else ""
        reason = " ".join(str(err).split())
        if len(reason) > 800:
            reason = reason[:800] + " ..."
        raise ModelError(f"{where}{hint}: could not load {what}: {type(err).__name__}: {reason}") from err
