"""One stage table: `dvc.yaml`, the `pmg` subcommands and the Prefect pipeline all follow it.

`dvc.yaml` is checked stage by stage against the table: the command, the
`pmg` code each stage runs (computed from the import graph, `pmg.stages.deps`),
the data it reads and the files it writes (the catalogue's inputs and outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pmg.cli import build_parser
from pmg.config import load_params
from pmg.stages.catalogue import Catalogue
from pmg.stages.deps import fix_dvc_yaml, stage_dependencies
from pmg.stages.table import STAGES, STAGES_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
RAW_PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
PARAMS = load_params(ROOT / "params.yaml")


def _render(text: str, item: str | None) -> str:
    """`dvc.yaml` templating: `${item}` and `${dotted.param}` from params.yaml."""

    def value(match: re.Match) -> str:
        key = match.group(1)
        if key == "item":
            assert item is not None, text
            return item
        node = RAW_PARAMS
        for part in key.split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _entries(items: list) -> list[str]:
    """Paths of a `deps` / `outs` / `metrics` / `plots` list (entries may carry options)."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in items or []]


def _body(name: str) -> dict:
    stage = DVC[name]
    return stage["do"] if "foreach" in stage else stage


def _scenarios(name: str) -> list[str | None]:
    return list(PARAMS.base.scenarios) if STAGES_BY_NAME[name].per_scenario else [None]


def test_dvc_yaml_has_the_stage_tables_stages_in_its_order() -> None:
    assert list(DVC) == [s.name for s in STAGES]
    for spec in STAGES:
        assert ("foreach" in DVC[spec.name]) == spec.per_scenario, spec.name
        if spec.per_scenario:
            assert DVC[spec.name]["foreach"] == "${base.scenarios}"


@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_dvc_command_is_the_tables(name: str) -> None:
    assert _body(name)["cmd"] == STAGES_BY_NAME[name].cmd


@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_dvc_code_deps_are_the_modules_the_stage_runs(name: str) -> None:
    """Every `pmg` module the stage imports (transitively), and nothing else: `python -m pmg.stages.deps --fix`."""
    declared = [d for d in _entries(_body(name)["deps"]) if d.startswith("pmg/")]
    assert sorted(declared) == stage_dependencies(name), (
        f"dvc.yaml stage {name!r}: its pmg/ deps are not the modules it runs; "
        "run `python -m pmg.stages.deps --fix`"
    )


@pytest.mark.parametrize("name", [s.name for s in STAGES])
def test_dvc_data_deps_and_outputs_are_the_catalogues(name: str) -> None:
    body = _body(name)
    for scenario in _scenarios(name):
        catalogue = Catalogue(PARAMS)
        data = {_render(d, scenario) for d in _entries(body["deps"]) if not d.startswith("pmg/")}
        assert data == {str(p) for p in catalogue.inputs(name, scenario)}, (name, scenario)
        written = {
            _render(o, scenario)
            for key in ("outs", "metrics", "plots")
            for o in _entries(body.get(key))
        }
        assert written == {str(p) for p in catalogue.outputs(name, scenario)}, (name, scenario)
        metrics = [_render(m, scenario) for m in _entries(body.get("metrics"))]
        assert str(catalogue.timings(name, scenario)) in metrics  # every stage's timing is a metric
        for entry in body.get("metrics", []):
            assert next(iter(entry.values()))["cache"] is False


def test_the_code_deps_are_exact_and_mostly_narrow() -> None:
    """The lists hold what each stage really runs: the model code it loads, not every model's."""
    deps = {spec.name: set(stage_dependencies(spec.name)) for spec in STAGES}
    assert "pmg/models/generator.py" in deps["generate"] and "pmg/models/scorer.py" in deps["select"]
    assert "pmg/models/lpips_metric.py" in deps["evaluate"]
    for name in ("prepare", "describe", "keywords", "select", "evaluate", "report"):
        assert "pmg/models/generator.py" not in deps[name], name
    assert "pmg/method/prompts" in deps["describe"] and "pmg/method/prompts" in deps["keywords"]
    assert {"pmg/io.py", "pmg/schemas.py", "pmg/scenarios"} <= set.intersection(*deps.values())
    assert "pmg/zoo/sd.py" not in deps["zoo_clip"] and "pmg/zoo/clip.py" not in deps["zoo_llm"]


def test_fix_rewrites_only_the_pmg_deps() -> None:
    text = "stages:\n  a:\n    cmd: pmg a\n    deps:\n      - pmg/old.py\n      - data/x\n    outs:\n      - data/y\n"
    fixed = fix_dvc_yaml(text, {"a": ["pmg/new.py", "pmg/z"]})
    assert yaml.safe_load(fixed)["stages"]["a"]["deps"] == ["pmg/new.py", "pmg/z", "data/x"]


def test_cli_subcommands_are_the_stage_table() -> None:
    parser = build_parser()
    for spec in STAGES:
        args = parser.parse_args([*spec.command, *(["--scenario", "emoji"] if spec.per_scenario else [])])
        assert args.stage is spec
        assert getattr(args, "scenario", None) == ("emoji" if spec.per_scenario else None)


def test_one_stage_list() -> None:
    """The CLI, the Prefect flows and `dvc.yaml` (checked above) read the one table; no stage name strings elsewhere."""
    import flows.tasks
    import pmg.cli

    assert flows.tasks.STAGES is STAGES
    cli_source = Path(pmg.cli.__file__).read_text(encoding="utf-8")
    assert "STAGE_ENTRY_POINTS" not in cli_source and "importlib" not in cli_source
    tasks_source = Path(flows.tasks.__file__).read_text(encoding="utf-8")
    assert "importlib" not in tasks_source and 'Stage("' not in tasks_source
