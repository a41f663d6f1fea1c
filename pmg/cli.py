"""The `pmg` command: the entry point of DVC stages and of people.

Every subcommand reads `params.yaml` once (plus `--set key=value` overrides)
into frozen config objects and calls library functions. The pipeline's
subcommands come from the stage table (`pmg.stages.table.STAGES`), and each
runs through `pmg.stages.table.run_stage`, which also records the stage's
timing; `--scenario` choices come from the scenario registry
(`pmg.scenarios`). Errors a user can fix (`pmg.errors.PMGError`) print one
clear message and exit with status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from pmg.config import Params, load_params
from pmg.errors import ConfigError, PMGError
from pmg.scenarios import names as scenario_names

if TYPE_CHECKING:
    from pmg.registry import Registry
    from pmg.stages.catalogue import Catalogue


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params, _overrides(args.set))


def _catalogue(args: argparse.Namespace, params: Params) -> Catalogue:
    from pmg.stages.catalogue import Catalogue

    return Catalogue(params, metrics_root=Path(args.metrics_root), plots_root=Path(args.plots_root))


def _registry(args: argparse.Namespace) -> Registry:
    # Imported here: boto3 stays out of the start-up of every other command.
    from pmg.registry import Registry

    return Registry(_params(args).registry, scenario=args.scenario)


def _cmd_registry_init(args: argparse.Namespace) -> int:
    from pmg.registry import init_registry

    # The bucket serves every scenario: init takes none.
    outcome = init_registry(_params(args).registry)
    state = "created" if outcome["bucket_created"] else "exists"
    print(f"bucket {outcome['bucket']!r} at {outcome['endpoint']}: {state}; conditional writes: ok")
    return 0


def _cmd_registry_push(args: argparse.Namespace) -> int:
    from pmg.registry import Registry, load_metrics

    params = _params(args)
    dumped = params.model_dump(mode="json")
    unknown = sorted(set(args.section) - set(dumped))
    if unknown:
        raise ConfigError(f"--section {', '.join(unknown)}: not a params section (have {', '.join(dumped)})")
    recorded = {name: dumped[name] for name in (args.section or dumped)}
    registry = Registry(params.registry, scenario=args.scenario)
    manifest = registry.push(
        args.adapter_dir, load_metrics(args.metrics), recorded, create_bucket=args.create_bucket
    )
    print(
        f"pushed {args.scenario} version {manifest.version} ({len(manifest.files)} files) to {registry.url()}"
    )
    return 0


def _cmd_registry_list(args: argparse.Namespace) -> int:
    import json

    versions = _registry(args).versions()
    if args.json:
        rows = [{**info.manifest.model_dump(mode="json"), "aliases": list(info.aliases)} for info in versions]
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not versions:
        print(f"no versions of {args.scenario}")
        return 0
    print(f"{'version':>7}  {'created_at':20}  {'git':8}  {'aliases':19}  metrics")
    for info in versions:
        m = info.manifest
        metrics = " ".join(f"{name}={value:.4g}" for name, value in sorted(m.metrics.items()))
        aliases = ",".join(info.aliases) or "-"
        print(f"{m.version:>7}  {m.created_at:20}  {m.git_revision[:8]:8}  {aliases:19}  {metrics}")
    return 0


def _cmd_registry_promote(args: argparse.Namespace) -> int:
    move = _registry(args).promote(args.version, to=args.to, reason=args.reason, force=args.force)
    if move.report is not None and move.report.results:
        print(move.report.describe())
    if not move.changed:
        print(f"{args.scenario} {move.alias} already points at version {move.to_version}")
    else:
        forced = " (forced)" if move.forced else ""
        print(f"{args.scenario} {move.alias}: {move.from_version or 'none'} -> {move.to_version}{forced}")
    return 0


def _cmd_registry_rollback(args: argparse.Namespace) -> int:
    move = _registry(args).rollback(args.alias, reason=args.reason)
    print(f"{args.scenario} {move.alias}: {move.from_version} -> {move.to_version} (rolled back)")
    return 0


def _cmd_registry_history(args: argparse.Namespace) -> int:
    for entry in _registry(args).alias_history(args.alias):
        forced = " FORCED" if entry.get("forced") else ""
        print(
            f"{entry['at']}  {entry['action']:8}  {entry.get('from_version') or 'none'} -> "
            f"{entry['to_version']}{forced}  by {entry['by']}: {entry['reason']}"
        )
    return 0


def _cmd_registry_pull(args: argparse.Namespace) -> int:
    manifest = _registry(args).pull(args.ref, args.dest)
    done = f"{len(manifest.files)} files, sha256 verified"
    print(f"pulled {args.scenario} version {manifest.version} ({done}) into {args.dest}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    params = _params(args)
    print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from pmg.stages.table import run_stage

    spec = args.stage
    params = _params(args)
    catalogue = _catalogue(args, params)
    if not spec.per_scenario:
        result = run_stage(spec, params, catalogue=catalogue)
        if spec.show is not None:
            spec.show(result)
        return 0
    if args.scenario and args.scenario not in params.base.scenarios:
        raise ConfigError(f"scenario {args.scenario!r} is not in base.scenarios {list(params.base.scenarios)}")
    for scenario in [args.scenario] if args.scenario else list(params.base.scenarios):
        result = run_stage(spec, params, scenario, catalogue=catalogue)
        if spec.show is not None:
            spec.show(result)
    return 0


def _cmd_personalize(args: argparse.Namespace) -> int:
    from pmg.stages.personalize import personalize

    params = _params(args)
    result = personalize(
        params, args.scenario, args.user, args.target, adapter_dir=args.adapter, catalogue=_catalogue(args, params)
    )
    print(f"scenario {result['scenario']}, user {result['user']}, target {result['target']}")
    print(f"preference keywords: {', '.join(result['preference_keywords']) or '(none)'}")
    print(f"target keywords:     {', '.join(result['target_keywords'])}")
    print(f"soft embeddings:     {'yes' if result['soft_embeddings'] else 'no adapter: keywords only'}")
    print(f"{'cand':>4} {'w_p:w_t':>8} {'d_p':>7} {'d_t':>7} {'z':>8}  image")
    for row in result["candidates"]:
        mark = "*" if row["chosen"] else " "
        weights = f"{row['w_p']:g}:{row['w_t']:g}"
        print(f"{row['candidate']:>3}{mark} {weights:>8} {row['d_p']:7.3f} {row['d_t']:7.3f} {row['z']:8.3f}  {row['image']}")
    print(f"chosen: {result['chosen_image']} (weights {result['chosen_weights'][0]:g}:{result['chosen_weights'][1]:g})")
    return 0


_GROUP_HELP = {
    "assets": "offline assets from registry package archives",
    "zoo": "build the mini model zoo (mini profile)",
}


def _stage_commands(sub: argparse._SubParsersAction, scenarios: list[str]) -> None:
    """One subcommand per stage of the stage table (`pmg zoo clip` for `("zoo", "clip")`)."""
    from pmg.stages.table import STAGES

    groups: dict[str, argparse._SubParsersAction] = {}
    for spec in STAGES:
        *group, word = spec.command
        parent = sub
        if group:
            if group[0] not in groups:
                grouping = sub.add_parser(group[0], help=_GROUP_HELP.get(group[0], f"{group[0]} stages"))
                groups[group[0]] = grouping.add_subparsers(dest=f"{group[0]}_command", required=True)
            parent = groups[group[0]]
        command = parent.add_parser(word, help=spec.help)
        if spec.per_scenario:
            command.add_argument("--scenario", choices=scenarios, help="one scenario (default: all)")
        command.set_defaults(func=_cmd_stage, stage=spec)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `pmg` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="pmg", description="Personalized Multimodal Generation pipeline")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter, e.g. base.profile=full"
    )
    parser.add_argument("--metrics-root", default="metrics", help="where stage metrics go (default: metrics)")
    parser.add_argument("--plots-root", default="plots", help="where stage plots go (default: plots)")
    sub = parser.add_subparsers(dest="command", required=True)
    scenarios = list(scenario_names())

    config = sub.add_parser("config", help="print the parsed, validated parameters")
    config.set_defaults(func=_cmd_config)
    _stage_commands(sub, scenarios)

    registry = sub.add_parser("registry", help="versioned adapters on S3, aliases moved by metric gates")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    init = registry_sub.add_parser("init", help="create the bucket if missing; check conditional writes")
    init.set_defaults(func=_cmd_registry_init)

    def scenario_option(command: argparse.ArgumentParser) -> None:
        # Versions and aliases are per scenario (<prefix>/<scenario>/...).
        command.add_argument(
            "--scenario", required=True, choices=scenarios, help="whose versions and aliases"
        )

    push = registry_sub.add_parser("push", help="upload an adapter folder as the next immutable version")
    scenario_option(push)
    push.add_argument("adapter_dir", help="the adapter folder (safetensors + JSON config)")
    push.add_argument("--metrics", required=True, help="metrics JSON file (nested objects are flattened)")
    push.add_argument(
        "--section", action="append", default=[], help="params section to record (repeatable; default: all)"
    )
    push.add_argument("--create-bucket", action="store_true", help="create the bucket if it does not exist")
    push.set_defaults(func=_cmd_registry_push)
    listing = registry_sub.add_parser("list", help="complete versions, their aliases and metrics")
    listing.add_argument("--json", action="store_true", help="print the manifests as JSON")
    scenario_option(listing)
    listing.set_defaults(func=_cmd_registry_list)
    promote = registry_sub.add_parser("promote", help="move an alias to a version if the metric gates pass")
    promote.add_argument("version", type=int)
    promote.add_argument("--to", required=True, choices=["staging", "production"])
    promote.add_argument("--reason", required=True, help="why (recorded in the alias history)")
    promote.add_argument("--force", action="store_true", help="move even if gates fail (recorded as forced)")
    scenario_option(promote)
    promote.set_defaults(func=_cmd_registry_promote)
    rollback = registry_sub.add_parser("rollback", help="point an alias back at its previous version")
    rollback.add_argument("alias", choices=["staging", "production"])
    rollback.add_argument("--reason", default="rollback", help="why (recorded in the alias history)")
    scenario_option(rollback)
    rollback.set_defaults(func=_cmd_registry_rollback)
    history = registry_sub.add_parser("history", help="every move of an alias")
    history.add_argument("alias", choices=["staging", "production"])
    scenario_option(history)
    history.set_defaults(func=_cmd_registry_history)
    pull = registry_sub.add_parser("pull", help="download a version or alias, every sha256 verified")
    pull.add_argument("ref", help="version number (3 or v3) or alias (staging, production)")
    pull.add_argument("dest", help="destination folder (must not exist or be empty)")
    scenario_option(pull)
    pull.set_defaults(func=_cmd_registry_pull)

    personalize = sub.add_parser("personalize", help="run the whole chain for one (user, target) pair")
    personalize.add_argument("--scenario", required=True, choices=scenarios)
    personalize.add_argument("--user", required=True)
    personalize.add_argument("--target", required=True, help="a catalogue item id")
    personalize.add_argument("--adapter", help="adapter folder (default: <train_soft.out>/<scenario>)")
    personalize.set_defaults(func=_cmd_personalize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pmg`; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PMGError as err:
        print(f"pmg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
