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
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            # One line: the YAML message without its multi-line source excerpt.
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {key}: the value is not valid YAML ({problem}); quote it or fix it") from None
        except RecursionError:
            raise ConfigError(f"--set {key}: the value is nested too deeply to be a setting") from None
    return out


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params, _overrides(args.set))


def _catalogue(args: argparse.Namespace, params: Params) -> Catalogue:
    from pmg.stages.catalogue import Catalogue

    return Catalogue(params, metrics_root=Path(args.metrics_root), plots_root=Path(args.plots_root))


def _cmd_models_fetch(args: argparse.Namespace) -> int:
    from pmg.models.fetch import fetch_profile

    params = _params(args)
    if args.profile not in params.profiles:
        raise ConfigError(f"--profile {args.profile!r}: profiles defines only {sorted(params.profiles)}")
    records = fetch_profile(
        params.profiles[args.profile], args.profile, roles=tuple(args.role) or None, force=args.force
    )
    for role, record in records.items():
        state = "up to date" if record.get("skipped") else "fetched, sha256 verified"
        print(f"{role}: {record['repo']}@{record['revision'][:12]}: {len(record['files'])} files, {state}")
    return 0


def _cmd_models_convert_clip(args: argparse.Namespace) -> int:
    from pmg.models.scorer import convert_open_clip_checkpoint

    out = convert_open_clip_checkpoint(args.checkpoint, args.out, name=args.name)
    print(f"wrote {out} (open_clip_config.json + open_clip_model.safetensors)")
    return 0


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
        args.adapter_dir,
        load_metrics(args.metrics),
        recorded,
        create_bucket=args.create_bucket,
        pairs=args.pairs,
        overrides=_overrides(args.set),
    )
    evaluation = " + per-pair table" if manifest.evaluation else " (no per-pair table: gates cannot pass)"
    print(
        f"pushed {args.scenario} version {manifest.version} ({len(manifest.files)} files{evaluation}) "
        f"to {registry.url()}"
    )
    return 0


def _cmd_registry_list(args: argparse.Namespace) -> int:
    import json

    from pmg.registry.views import versions_table

    registry = _registry(args)
    versions = registry.versions()
    if args.json:
        rows = [{**info.manifest.model_dump(mode="json"), "aliases": list(info.aliases)} for info in versions]
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not versions:
        print(f"no versions of {args.scenario}")
        return 0
    print(versions_table(versions, [gate.metric for gate in registry.cfg.gates]))
    return 0


def _announce_scenarios(args: argparse.Namespace) -> list[str]:
    """The scenarios the `pmg-registry` artifact shows: those with adapters, and the one acted on."""
    return [*_params(args).train_soft.scenarios, args.scenario]


def _cmd_registry_promote(args: argparse.Namespace) -> int:
    from pmg.registry import PromotionRefused
    from pmg.registry.announce import announce_move, announce_refusal

    registry = _registry(args)
    log = _stderr_line
    try:
        move = registry.promote(args.version, to=args.to, reason=args.reason, force=args.force)
    except PromotionRefused as refused:
        announce_refusal(args.scenario, args.version, args.to, str(refused), log=log)
        raise
    if move.report is not None and move.report.results:
        print(move.report.describe())
    if not move.changed:
        print(f"{args.scenario} {move.alias} already points at version {move.to_version}")
    else:
        forced = " (forced)" if move.forced else ""
        print(f"{args.scenario} {move.alias}: {move.from_version or 'none'} -> {move.to_version}{forced}")
        announce_move(registry.cfg, args.scenario, move, args.reason, _announce_scenarios(args), log=log)
    return 0


def _cmd_registry_rollback(args: argparse.Namespace) -> int:
    from pmg.registry.announce import announce_move

    registry = _registry(args)
    move = registry.rollback(args.alias, reason=args.reason)
    print(f"{args.scenario} {move.alias}: {move.from_version} -> {move.to_version} (rolled back)")
    announce_move(registry.cfg, args.scenario, move, args.reason, _announce_scenarios(args), log=_stderr_line)
    return 0


def _stderr_line(line: str) -> None:
    print(f"pmg: {line}", file=sys.stderr)


def _cmd_registry_status(args: argparse.Namespace) -> int:
    from pmg.registry import Registry
    from pmg.registry.views import status_table

    params = _params(args)
    scenarios = args.scenario or list(params.train_soft.scenarios)
    statuses = [row for s in scenarios for row in Registry(params.registry, scenario=s).status()]
    print(status_table(statuses, [gate.metric for gate in params.registry.gates]))
    return 0


def _cmd_registry_reproduce(args: argparse.Namespace) -> int:
    from pmg.registry.reproduce import reproduce

    params = _params(args)
    catalogue = _catalogue(args, params)
    registry = _registry(args)
    report = reproduce(
        registry,
        args.version,
        Path(args.workdir) if args.workdir else None,
        metrics_path=catalogue.metrics("evaluate", args.scenario),
        adapter_path=catalogue.adapter(args.scenario),
        command=args.command,
        tolerance=args.tolerance,
        log=print,
    )
    print(report.describe())
    return 0 if report.matched else 1


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


def _cmd_summary(args: argparse.Namespace) -> int:
    from pmg.stages.summary import summary

    params = _params(args)
    print(summary(params, _catalogue(args, params), width=args.width))
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
    "models": "the rehearsal models, the real checkpoints",
}


def _stage_commands(sub: argparse._SubParsersAction, scenarios: list[str]) -> dict[str, argparse._SubParsersAction]:
    """One subcommand per stage of the stage table (`pmg zoo clip` for `("zoo", "clip")`); the command groups."""
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
    return groups


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
    groups = _stage_commands(sub, scenarios)

    # `pmg models build-rehearsal` is the stage `rehearsal_models` of the table.
    models_sub = groups["models"]
    roles = ["llm", "generator", "captioner", "scorer"]
    fetch_models = models_sub.add_parser(
        "fetch", help="download a profile's checkpoints at pinned commits, sha256 verified (needs a hub)"
    )
    fetch_models.add_argument("--profile", default="full", help="whose models (default: full)")
    fetch_models.add_argument("--role", action="append", default=[], choices=roles, help="only this model (repeatable)")
    fetch_models.add_argument("--force", action="store_true", help="fetch even folders that are up to date")
    fetch_models.set_defaults(func=_cmd_models_fetch)
    convert = models_sub.add_parser(
        "convert-clip", help="convert a pickled open_clip checkpoint once into a safetensors folder"
    )
    convert.add_argument("checkpoint", help="a .bin/.pt file (with --name) or an open_clip folder holding one")
    convert.add_argument("out", help="the folder to write")
    convert.add_argument("--name", help="the built-in architecture of a checkpoint file, e.g. ViT-B-32")
    convert.set_defaults(func=_cmd_models_convert_clip)

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
    push.add_argument(
        "--pairs",
        help="per-pair evaluation table stored with the version for the paired gates "
        "(data/evaluate/<scenario>/pairs.parquet)",
    )
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
    status = registry_sub.add_parser("status", help="where staging and production point, one row each")
    status.add_argument(
        "--scenario",
        action="append",
        choices=scenarios,
        help="scenario to show (repeatable; default: train_soft.scenarios)",
    )
    status.set_defaults(func=_cmd_registry_status)
    again = registry_sub.add_parser(
        "reproduce", help="re-run a version's recorded revision and params; compare its metrics"
    )
    again.add_argument("version", type=int)
    scenario_option(again)
    again.add_argument(
        "--workdir", help="git worktree to create (default: .reproduce/<scenario>-v<version>)"
    )
    again.add_argument(
        "--command",
        help="what re-runs the pipeline there (default: dvc repro evaluate@<scenario>)",
    )
    again.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest metric difference counted as the same"
    )
    again.set_defaults(func=_cmd_registry_reproduce)

    summary = sub.add_parser("summary", help="the end-of-demo summary: headline, stage timings, report")
    summary.add_argument("--width", type=int, default=120, help="widest line printed (default 120)")
    summary.set_defaults(func=_cmd_summary)

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
