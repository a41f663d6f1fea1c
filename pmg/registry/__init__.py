"""S3 model registry of trained adapters: immutable versions, gated aliases.

`Registry(cfg)` pushes an adapter folder as the next numbered version (files
and sha256 checksums, metrics, params, git revision, `dvc.lock` hash), lists
and pulls committed versions (verified), and moves the `staging` and
`production` aliases: a promotion passes the metric gates of
`params.yaml: registry.gates` against the current production, a rollback
restores the alias's previous target. See `pmg.registry.registry` for the
layout and why racing or interrupted pushes are safe.
"""

from pmg.registry.gates import GateReport, GateResult, evaluate_gates
from pmg.registry.manifest import Manifest, load_metrics
from pmg.registry.registry import (
    ALIASES,
    AliasMove,
    PromotionRefused,
    Registry,
    VersionInfo,
    register_and_maybe_promote,
)
from pmg.registry.s3 import make_client

__all__ = [
    "ALIASES",
    "AliasMove",
    "GateReport",
    "GateResult",
    "Manifest",
    "PromotionRefused",
    "Registry",
    "VersionInfo",
    "evaluate_gates",
    "load_metrics",
    "make_client",
    "register_and_maybe_promote",
]
