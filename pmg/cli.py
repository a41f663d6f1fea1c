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

import yaml

from pmg.config import Params, load_params
from pmg.errors import ConfigError, PMGError


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


def _cmd_assets_fetch(args: argparse.Namespace) -> int:
    from pmg.assets import fetch_assets

    params = _params(args)
    fetch_assets(params.assets)
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

    prepare = sub.add_parser("prepare", help="canonical, validated tables per scenario")
    prepare.add_argument("--scenario", choices=["clothing", "movies", "emoji"], help="one scenario (default: all)")
    prepare.add_argument("--metrics-dir", default="metrics/prepare", help="where the stage metrics go")
    prepare.set_defaults(func=_cmd_prepare)
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
