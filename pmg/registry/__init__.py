"""S3 model registry of trained adapters: immutable versions, gated aliases, per scenario.

`Registry(cfg, scenario="clothing")` pushes an adapter folder as the
scenario's next numbered version (files and sha256 checksums, metrics, params,
git revision, `dvc.lock` hash), lists and pulls committed versions (verified),
and moves the scenario's `staging` and `production` aliases: a promotion
passes the metric gates of `params.yaml: registry.gates` against the
scenario's current production, a rollback restores the alias's previous
target. Each scenario has its own versions and aliases under
`<prefix>/<scenario>/`; `init_registry(cfg)` prepares the bucket for all of
them. See `pmg.registry.registry` for the layout and why racing or
interrupted pushes are safe.
"""

from pmg.registry.gates import GateReport, GateResult, evaluate_gates
from pmg.registry.manifest import Manifest, load_metrics
from pmg.registry.registry import (
    ALIASES,
    AliasMove,
    AliasStatus,
    IdenticalAdapter,
    PromotionRefused,
    Registration,
    Registry,
    VersionInfo,
    adapter_scenario,
    check_scenario,
    init_registry,
    promotion_path,
    register_and_maybe_promote,
)
from pmg.registry.s3 import make_client

__all__ = [
    "ALIASES",
    "AliasMove",
    "AliasStatus",
    "IdenticalAdapter",
    "Registration",
    "promotion_path",
    "GateReport",
    "GateResult",
    "Manifest",
    "PromotionRefused",
    "Registry",
    "VersionInfo",
    "adapter_scenario",
    "check_scenario",
    "evaluate_gates",
    "init_registry",
    "load_metrics",
    "make_client",
    "register_and_maybe_promote",
]
