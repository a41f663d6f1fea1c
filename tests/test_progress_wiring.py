"""Every long loop of the pipeline walks through `pmg.progress.progress` (issue 17, item 7)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (module, a phrase of the loop's bar description): the loops that take minutes in `make demo`.
LOOPS = [
    ("pmg/models/llm.py", "prompts, batches"),  # describe summaries, keyword prompts
    ("pmg/method/generate.py", "pairs"),  # candidates of the main run and of every ablation run
    ("pmg/method/train_soft.py", "train_soft steps"),
    ("pmg/stages/ablations.py", "runs"),
    ("pmg/zoo/clip.py", "zoo clip epochs"),
    ("pmg/zoo/sd.py", "zoo sd vae steps"),
    ("pmg/zoo/sd.py", "zoo sd unet steps"),
]


def _loop_descriptions(path: str) -> list[str]:
    """The `desc=` texts of `progress(...)` calls that are the iterable of a `for` loop."""
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8"))):
        call = node.iter if isinstance(node, ast.For) else None
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "progress":
            for keyword in call.keywords:
                if keyword.arg == "desc":
                    found.append(ast.unparse(keyword.value))
    return found


@pytest.mark.parametrize(("path", "phrase"), LOOPS)
def test_long_loops_show_progress(path: str, phrase: str) -> None:
    assert any(phrase in desc for desc in _loop_descriptions(path)), f"{path}: no progress bar on the {phrase!r} loop"
