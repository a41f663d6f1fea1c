"""Re-run a registry version's recorded revision and params, and compare its metrics.

`pmg registry reproduce 7 --scenario clothing`:

1. checks out the version's `git_revision` into a new git worktree
   (default `.reproduce/<scenario>-v<version>`), so the current checkout is
   untouched;
2. writes its `params.yaml`: the revision's file with every section the
   version recorded replaced by the recorded values (they already include
   the run's overrides, which are also shown);
3. shares this checkout's DVC cache and asset download cache with the
   worktree (`.dvc/config.local`, a `.asset-cache` link), so unchanged
   inputs are not fetched again;
4. removes the worktree's committed evaluation metrics (`metrics_path`, so a
   stale file cannot pass for a result) and runs the command (default
   `dvc repro evaluate@<scenario>`) there;
5. compares the metrics it wrote with the recorded ones, metric by metric,
   and says whether the re-trained adapter (`adapter_path`) is byte-identical.

Where the evaluation metrics and the adapter land is the caller's to say
(`pmg.stages.catalogue.Catalogue.metrics` and `.adapter`, as `pmg registry
reproduce` does): paths relative to the worktree's root.

The worktree is left for inspection (`git worktree remove <dir>` drops it).
A version recorded from a dirty work tree cannot be reproduced exactly; the
report says so and lists the paths that were changed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pmg.errors import RegistryError
from pmg.registry import manifest as mf
from pmg.registry.registry import Registry

Log = Callable[[str], object]
_DEFAULT_COMMAND = "dvc repro evaluate@{scenario}"


@dataclass(frozen=True)
class MetricCheck:
    """One recorded metric against its reproduction."""

    name: str
    recorded: float
    reproduced: float | None
    matched: bool


@dataclass(frozen=True)
class Reproduction:
    """The outcome of `reproduce`.

    Attributes:
        scenario, version: what was reproduced.
        workdir: the worktree it ran in.
        revision: the git revision checked out.
        checks: one per recorded metric.
        adapter_identical: whether the re-trained adapter is byte-identical
            (None: no adapter folder at `adapter_path`).
        dirty_paths: paths that were uncommitted when the version was pushed.
        overrides: the recorded overrides.
        tolerance: the largest difference counted as a match.
    """

    scenario: str
    version: int
    workdir: Path
    revision: str
    checks: tuple[MetricCheck, ...]
    adapter_identical: bool | None
    dirty_paths: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.0

    @property
    def matched(self) -> bool:
        return bool(self.checks) and all(check.matched for check in self.checks)

    def describe(self) -> str:
        lines = [
            f"{self.scenario} version {self.version} at {self.revision[:12]} re-run in {self.workdir}",
            f"overrides: {json.dumps(self.overrides, sort_keys=True) if self.overrides else 'none'}",
        ]
        if self.dirty_paths:
            shown = ", ".join(self.dirty_paths[:5]) + (" …" if len(self.dirty_paths) > 5 else "")
            lines.append(f"warning: the version was pushed from a dirty tree ({shown}); not exactly reproducible")
        lines.append(f"{'metric':32}  {'recorded':>12}  {'reproduced':>12}  {'difference':>11}")
        for check in self.checks:
            again = "missing" if check.reproduced is None else f"{check.reproduced:.6g}"
            diff = "" if check.reproduced is None else f"{check.reproduced - check.recorded:+.3g}"
            mark = "" if check.matched else "  DIFFERS"
            lines.append(f"{check.name[:32]:32}  {check.recorded:>12.6g}  {again:>12}  {diff:>11}{mark}")
        adapter = {True: "byte-identical", False: "different bytes", None: "not found"}[self.adapter_identical]
        lines.append(f"adapter: {adapter}")
        verdict = "reproduced" if self.matched else "NOT reproduced"
        lines.append(f"{verdict} (tolerance {self.tolerance:g}); `git worktree remove {self.workdir}` drops it")
        return "\n".join(lines)


def _git(args: list[str], cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RegistryError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def recorded_params(revision_params: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The revision's params with each recorded section replaced by the recorded values."""
    merged = dict(revision_params)
    merged.update({name: value for name, value in recorded.items()})
    return merged


def compare_metrics(
    recorded: Mapping[str, float], reproduced: Mapping[str, float], tolerance: float
) -> tuple[MetricCheck, ...]:
    """One check per recorded metric (absolute difference within `tolerance`)."""
    checks = []
    for name, value in sorted(recorded.items()):
        again = reproduced.get(name)
        matched = again is not None and math.isclose(again, value, rel_tol=0.0, abs_tol=tolerance)
        checks.append(MetricCheck(name, value, again, matched))
    return tuple(checks)


def reproduce(
    registry: Registry,
    version: int,
    workdir: Path | None = None,
    *,
    metrics_path: Path,
    adapter_path: Path,
    command: str | None = None,
    tolerance: float = 1e-4,
    repo: Path = Path("."),
    log: Log = print,
) -> Reproduction:
    """Check out `version`'s revision, apply its params, re-run, compare (see the module docstring).

    Args:
        registry: the scenario's registry.
        version: the version to reproduce.
        workdir: the worktree to create; must not exist (or be empty).
        metrics_path: the evaluation metrics the command writes, relative to
            the worktree (`metrics/evaluate/<scenario>.json`).
        adapter_path: the adapter folder the command trains, relative to the
            worktree (`data/soft/<scenario>`).
        command: the shell command that re-runs the pipeline in the
            worktree (`{scenario}` is filled in); default `dvc repro
            evaluate@<scenario>`.
        tolerance: the largest absolute metric difference counted as equal.
        repo: the git checkout to make the worktree from.
        log: progress lines.

    Raises:
        RegistryError: no recorded revision, an unknown revision, an
            occupied workdir, a failed command, no metrics written.
    """
    manifest = registry.manifest(version)
    scenario = registry.scenario
    if manifest.git_revision == "unknown":
        raise RegistryError(f"{scenario} version {version} recorded no git revision: it cannot be reproduced")
    repo = Path(_git(["rev-parse", "--show-toplevel"], repo).strip())
    workdir = (workdir or repo / ".reproduce" / f"{scenario}-v{version}").absolute()
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise RegistryError(f"{workdir} exists and is not empty: choose another --workdir or remove it")
    log(f"checking out {manifest.git_revision[:12]} into {workdir}")
    _git(["worktree", "add", "--detach", str(workdir), manifest.git_revision], repo)

    params_file = workdir / "params.yaml"
    revision_params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    params = recorded_params(revision_params, manifest.params)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    _share_caches(repo, workdir)
    metrics_file = workdir / metrics_path
    metrics_file.unlink(missing_ok=True)

    line = (command or _DEFAULT_COMMAND).replace("{scenario}", scenario)  # other braces stay (JSON, shell)
    log(f"running `{line}` in {workdir}")
    done = subprocess.run(line, shell=True, cwd=workdir, env=_env(workdir), check=False)
    if done.returncode != 0:
        raise RegistryError(f"`{line}` failed with exit status {done.returncode} in {workdir}")
    if not metrics_file.is_file():
        raise RegistryError(f"`{line}` wrote no {metrics_file.relative_to(workdir)}: nothing to compare")
    reproduced = mf.load_metrics(metrics_file)
    adapter_dir = workdir / adapter_path
    identical = None
    if adapter_dir.is_dir():
        files = {name: mf.FileEntry(sha256=mf.sha256_file(p), size=p.stat().st_size)
                 for name, p in mf.adapter_files(adapter_dir).items()}
        identical = mf.adapter_digest(files) == (manifest.adapter_sha256 or mf.adapter_digest(manifest.files))
    return Reproduction(
        scenario=scenario,
        version=version,
        workdir=workdir,
        revision=manifest.git_revision,
        checks=compare_metrics(manifest.metrics, reproduced, tolerance),
        adapter_identical=identical,
        dirty_paths=manifest.git_dirty_paths,
        overrides=dict(manifest.overrides),
        tolerance=tolerance,
    )


def _share_caches(repo: Path, workdir: Path) -> None:
    """Point the worktree at this checkout's DVC cache and asset download cache."""
    cache = repo / ".dvc" / "cache"
    if (workdir / ".dvc").is_dir():
        (workdir / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n", encoding="utf-8")
    assets = repo / ".asset-cache"
    if assets.exists() and not (workdir / ".asset-cache").exists():
        (workdir / ".asset-cache").symlink_to(assets.resolve(), target_is_directory=True)


def _env(workdir: Path) -> dict[str, str]:
    """This environment, with the worktree's code first on PYTHONPATH (it runs its own `pmg`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), *filter(None, [env.get("PYTHONPATH")])])
    return env

