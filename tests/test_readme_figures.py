"""Every result table in the README comes from the committed metrics (issue 11, item 7)."""

from __future__ import annotations

from pathlib import Path

from pmg.config import load_params
from pmg.stages.catalogue import Catalogue
from pmg.stages.summary import README_BLOCK, fill_readme, readme_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_the_metrics() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    params = load_params(ROOT / "params.yaml")
    blocks = readme_blocks(params, Catalogue(params, metrics_root=ROOT / "metrics"))
    marked = {m["name"]: m["body"] for m in README_BLOCK.finditer(readme)}
    assert {"headline", *(f"ablations:{s}" for s in params.base.scenarios)} <= set(marked)
    for name, body in marked.items():
        assert body.rstrip("\n") == blocks[name].rstrip("\n"), (
            f"README block {name!r} differs from metrics/: run `python -m pmg.stages.summary --readme README.md`"
        )


def test_fill_readme_replaces_only_marked_blocks() -> None:
    other = "<!-- metrics:other -->\nx\n<!-- /metrics:other -->\n"
    text = "a\n<!-- metrics:headline -->\nold\n<!-- /metrics:headline -->\nb 0.5\n" + other
    out = fill_readme(text, {"headline": "| new |\n"})
    assert out == "a\n<!-- metrics:headline -->\n| new |\n<!-- /metrics:headline -->\nb 0.5\n" + other
